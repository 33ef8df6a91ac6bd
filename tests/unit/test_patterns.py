"""User regular expressions bounded in size before compiling and in time when matching
(core/patterns.py), in validation rules and in `regex_match`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tessera.core.patterns import (
    RegexBudget,
    RegexTimeout,
    check_pattern,
    compile_pattern,
    request_budget,
    search,
)
from tessera.errors import InvalidPayload
from tessera.model.processing import ValidationRule
from tessera.pipeline.validation import check_validation_rule, validate_event

EVIL = "^(a|a)+$"
EVIL_TEXT = "a" * 40 + "b"


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("a{8000000}", "TESSERA_REGEX_MAX_REPEAT"),
        ("a{2,8000000}", "TESSERA_REGEX_MAX_REPEAT"),
        ("(a{1000}){1000}", "multiply"),
        ("((a{100}){100}){100}", "multiply"),
        ("([a-z]{999}){2}" * 60, "multiply"),
        ("x" * 1001, "TESSERA_REGEX_MAX_LENGTH"),
    ],
)
def test_patterns_too_large_are_refused_before_compiling(pattern: str, words: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidPayload, match=words):
        compile_pattern(pattern)
    assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize(
    "pattern",
    [
        r"^(?P<user>[^@]+)@(?P<domain>.+)$",
        r"\d{4}-\d{2}-\d{2}",
        r"[{}]{3}",
        r"(ab){1000}",
        r"\{1000000\}",  # escaped braces are text, not a count
        "a{,5}b{3,}",
    ],
)
def test_ordinary_patterns_pass(pattern: str) -> None:
    check_pattern(pattern)
    compile_pattern(pattern)


async def test_a_backtracking_match_stops_at_the_budget_off_the_loop() -> None:
    pattern = compile_pattern(EVIL)
    budget = RegexBudget(0.3)
    started = time.perf_counter()
    with pytest.raises(RegexTimeout, match="TESSERA_REGEX_BUDGET_SECONDS"):
        await search(pattern, EVIL_TEXT, budget)
    assert 0.25 < time.perf_counter() - started < 1.0
    with pytest.raises(RegexTimeout):  # nothing left for the next one
        await search(pattern, "aaa", budget)


def _rule(schema: dict[str, Any], name: str) -> ValidationRule:
    return ValidationRule(
        tenant="t",
        id=name,
        name=name,
        event_type="x",
        created=datetime.now(UTC),
        json_schema=schema,
    )


async def test_validation_patterns_run_within_one_budget_per_request() -> None:
    evil = _rule({"properties": {"name": {"pattern": EVIL}}}, "evil")
    other = _rule({"required": ["nope"]}, "other")
    started = time.perf_counter()
    with request_budget() as budget:
        errors = await validate_event({"name": EVIL_TEXT}, [evil, other])
        assert budget.remaining() <= 0
    took = time.perf_counter() - started
    assert errors == [
        "rule 'evil': the event could not be checked: the request's regular expressions "
        "took longer than 0.5 s (TESSERA_REGEX_BUDGET_SECONDS)"
    ]
    assert took < 1.0
    starts_with_o = _rule({"properties": {"name": {"pattern": "^o"}}}, "p")
    with request_budget():  # a fresh request, a fresh budget: ordinary patterns match
        assert await validate_event({"name": "no"}, [starts_with_o]) != []
        assert await validate_event({"name": "ok"}, [starts_with_o]) == []


def test_schemas_with_patterns_too_large_are_refused() -> None:
    schema: dict[str, Any] = {"patternProperties": {"a{8000000}": {}}}
    with pytest.raises(InvalidPayload, match="TESSERA_REGEX_MAX_REPEAT"):
        check_validation_rule(_rule(schema, "big"))
    with pytest.raises(InvalidPayload, match="TESSERA_REGEX_MAX_LENGTH"):
        check_validation_rule(_rule({"pattern": "x" * 2000}, "long"))
