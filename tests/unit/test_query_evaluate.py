"""What conditions mean: one table row per rule of tessera/query/evaluate.py."""

from __future__ import annotations

from typing import Any

import pytest

from tessera.query import evaluate, parse
from tessera.query.ast import Compare, Contains, Field, In, Literal, Not

PROFILE: dict[str, Any] = {
    "id": "p-1",
    "stats": {"visits": 3, "events": 10},
    "traits": {
        "plan": "pro",
        "name": "Ada Lovelace",
        "age": 36,
        "score": 4.5,
        "vip": True,
        "banned": False,
        "nickname": None,
        "tags": ["a", "b", 3, 2.5, True, None, ["x"], {"k": "v"}],
        "empty_list": [],
        "address": {"city": "London", "zip": "N1"},
        "zero": 0,
        "one": 1,
        "one_float": 1.0,
        "numeric_text": "5",
        "signup": "2024-03-01T10:00:00Z",
        "huge": 2**64 + 1,
        "with_nul": "ab\x00cd",
        "dash-key": "yes",
    },
}
RECORDS = {
    "profile": PROFILE,
    "event": {"type": "purchase", "properties": {"price": 19.99, "currency": "EUR"}},
    "session": {"device": {"os": {"name": "Linux"}}},
}


def check(text: str, expected: bool, records: dict[str, Any] | None = None) -> None:
    assert evaluate(parse(text), RECORDS if records is None else records) is expected, text


# Each row: condition, expected answer on RECORDS.
ROWS = [
    # reading fields
    ("profile@id == 'p-1'", True),
    ("profile@stats.visits == 3", True),
    ("profile@traits.address.city == 'London'", True),
    ("profile@traits.dash-key == 'yes'", True),
    ("event@properties.price > 19", True),
    ("session@device.os.name == 'Linux'", True),
    ("profile@traits.tags.0 EXISTS", False),  # lists are never entered
    ("profile@traits.plan.x EXISTS", False),  # nor are strings
    ("profile@traits.address.zip.x EXISTS", False),
    # EXISTS: present, even null
    ("profile@traits.plan EXISTS", True),
    ("profile@traits.nickname EXISTS", True),
    ("profile@traits.missing EXISTS", False),
    ("profile@traits.missing NOT EXISTS", True),
    ("profile@traits.nickname NOT EXISTS", False),
    ("profile@traits.address EXISTS", True),
    # IS NULL: missing or null
    ("profile@traits.nickname IS NULL", True),
    ("profile@traits.missing IS NULL", True),
    ("profile@traits.plan IS NULL", False),
    ("profile@traits.banned IS NULL", False),
    ("profile@traits.zero IS NULL", False),
    ("profile@traits.nickname IS NOT NULL", False),
    ("profile@traits.missing IS NOT NULL", False),
    ("profile@traits.plan IS NOT NULL", True),
    ("profile@traits.nickname == null", True),  # is IS NULL
    ("profile@traits.missing == null", True),
    ("profile@traits.plan != null", True),  # is IS NOT NULL
    ("profile@traits.missing != null", False),
    # == : same kind and equal
    ("profile@traits.plan == 'pro'", True),
    ("profile@traits.plan == 'Pro'", False),  # case-sensitive
    ("profile@traits.age == 36", True),
    ("profile@traits.age == 36.0", True),  # integers and floats mix
    ("profile@traits.one_float == 1", True),
    ("profile@traits.score == 4.5", True),
    ("profile@traits.numeric_text == 5", False),  # "5" is not 5
    ("profile@traits.age == '36'", False),
    ("profile@traits.vip == true", True),
    ("profile@traits.vip == 1", False),  # true is not 1
    ("profile@traits.one == true", False),  # 1 is not true
    ("profile@traits.zero == false", False),
    ("profile@traits.banned == false", True),
    ("profile@traits.banned == 0", False),
    ("profile@traits.tags == 'a'", False),  # a list equals no literal
    ("profile@traits.address == 'London'", False),
    ("profile@traits.missing == 'x'", False),
    ("profile@traits.nickname == 'x'", False),
    # != : present, not null, and not equal
    ("profile@traits.plan != 'basic'", True),
    ("profile@traits.plan != 'pro'", False),
    ("profile@traits.missing != 'pro'", False),  # missing: no comparison holds
    ("profile@traits.nickname != 'pro'", False),  # null: no comparison holds
    ("profile@traits.age != '36'", True),  # another kind is never equal
    ("profile@traits.numeric_text != 5", True),
    ("profile@traits.vip != 1", True),
    ("profile@traits.vip != true", False),
    ("profile@traits.tags != 'a'", True),
    ("profile@traits.age != 36.0", False),
    ("NOT profile@traits.missing == 'pro'", True),  # how to include missing fields
    # ordering: numbers with numbers, strings with strings
    ("profile@traits.age > 30", True),
    ("profile@traits.age >= 36", True),
    ("profile@traits.age > 36", False),
    ("profile@traits.age < 36.5", True),
    ("profile@traits.age <= 35.99", False),
    ("profile@traits.score > 4", True),
    ("profile@traits.numeric_text > 1", False),  # a string is not a number
    ("profile@traits.age > '1'", False),  # nor a number a string
    ("profile@traits.plan > 'a'", True),
    ("profile@traits.plan < 'q'", True),
    ("profile@traits.plan < 'Z'", False),  # code point order: 'Z' < 'p'
    ("profile@traits.signup > '2024-01-01'", True),  # ISO-8601 compares as text
    ("profile@traits.signup < '2024-03-01T09:59:59Z'", False),
    ("profile@traits.vip > 0", False),  # booleans are not numbers
    ("profile@traits.tags > 'a'", False),
    ("profile@traits.missing > 0", False),
    ("profile@traits.nickname < 0", False),
    # beyond 64 bits an integer is read as the nearest float, as SQLite reads it
    ("profile@traits.huge > 18446744073709551616.0", False),
    ("profile@traits.huge == 18446744073709551616.0", True),
    # BETWEEN: bounds included
    ("profile@traits.age BETWEEN 36 AND 40", True),
    ("profile@traits.age BETWEEN 30 AND 36", True),
    ("profile@traits.age BETWEEN 36.5 AND 40", False),
    ("profile@traits.age BETWEEN 40 AND 30", False),
    ("profile@traits.signup BETWEEN '2024-03-01' AND '2024-03-02'", True),
    ("profile@traits.numeric_text BETWEEN 1 AND 9", False),
    ("profile@traits.missing BETWEEN 1 AND 9", False),
    # IN
    ("profile@traits.plan IN ('basic', 'pro')", True),
    ("profile@traits.plan IN ('basic', 1)", False),
    ("profile@traits.age IN ('36', 36.0)", True),
    ("profile@traits.vip IN (1, 'true')", False),
    ("profile@traits.vip IN (false, true)", True),
    ("profile@traits.missing IN ('x')", False),
    # CONTAINS: substring or list membership
    ("profile@traits.name CONTAINS 'Love'", True),
    ("profile@traits.name CONTAINS 'love'", False),
    ("profile@traits.name CONTAINS ''", True),
    ("profile@traits.name CONTAINS 36", False),
    ("profile@traits.tags CONTAINS 'a'", True),
    ("profile@traits.tags CONTAINS 'x'", False),  # nested lists are not searched
    ("profile@traits.tags CONTAINS 'v'", False),
    ("profile@traits.tags CONTAINS 3", True),
    ("profile@traits.tags CONTAINS 3.0", True),
    ("profile@traits.tags CONTAINS 2.5", True),
    ("profile@traits.tags CONTAINS true", True),
    ("profile@traits.tags CONTAINS 1", False),  # true is not 1
    ("profile@traits.tags CONTAINS ''", False),  # a list has no substrings
    ("profile@traits.empty_list CONTAINS 'a'", False),
    ("profile@traits.address CONTAINS 'city'", False),  # objects: never
    ("profile@traits.age CONTAINS 3", False),
    ("profile@traits.missing CONTAINS 'a'", False),
    ("profile@traits.nickname CONTAINS ''", False),
    # STARTS WITH / ENDS WITH: strings only
    ("profile@traits.name STARTS WITH 'Ada'", True),
    ("profile@traits.name STARTS WITH 'ada'", False),
    ("profile@traits.name STARTS WITH ''", True),
    ("profile@traits.name ENDS WITH 'lace'", True),
    ("profile@traits.name ENDS WITH 'Ada'", False),
    ("profile@traits.name ENDS WITH 'Ada Lovelace and more'", False),
    ("profile@traits.tags STARTS WITH 'a'", False),
    ("profile@traits.age STARTS WITH '3'", False),
    ("profile@traits.missing ENDS WITH ''", False),
    # strings are read up to a U+0000, as SQLite's JSON functions read them
    ("profile@traits.with_nul == 'ab'", True),
    ("profile@traits.with_nul CONTAINS 'cd'", False),
    ("profile@traits.with_nul ENDS WITH 'b'", True),
    # boolean logic is two-valued
    ("NOT profile@traits.missing > 3", True),
    ("NOT profile@traits.nickname == 'x'", True),
    ("profile@traits.missing > 3 OR profile@traits.plan == 'pro'", True),
    ("profile@traits.plan == 'pro' AND NOT profile@traits.vip == false", True),
    ("NOT (profile@traits.plan == 'pro' AND profile@traits.age > 40)", True),
    ("profile@traits.plan == 'x' OR profile@traits.age > 40 OR profile@traits.vip == true", True),
    (
        "profile@traits.plan == 'pro' AND profile@traits.age > 40 AND profile@traits.vip == true",
        False,
    ),
    # fields of several records in one condition
    ("event@type == 'purchase' AND profile@traits.plan == 'pro'", True),
    ("event@properties.currency == 'EUR' AND session@device.os.name == 'Mac'", False),
]


@pytest.mark.parametrize(("text", "expected"), ROWS)
def test_semantics(text: str, expected: bool) -> None:
    check(text, expected)


def test_records_that_are_absent_have_only_missing_fields() -> None:
    records: dict[str, Any] = {"profile": PROFILE}
    check("event@type EXISTS", False, records)
    check("event@type IS NULL", True, records)
    check("event@type != 'x'", False, records)
    check("NOT event@type == 'x'", True, records)
    check("session@id NOT EXISTS", True, {})


def test_hand_built_trees_with_null_or_odd_literals() -> None:
    field = Field("profile", ("traits", "nickname"))
    plan = Field("profile", ("traits", "plan"))
    assert evaluate(Compare("==", field, Literal(None)), RECORDS) is False
    assert evaluate(Compare("!=", plan, Literal(None)), RECORDS) is True
    assert evaluate(Compare("!=", field, Literal(None)), RECORDS) is False
    assert evaluate(Compare(">", plan, Literal(True)), RECORDS) is False
    assert evaluate(In(plan, ()), RECORDS) is False
    assert evaluate(Not(In(plan, ())), RECORDS) is True
    tags = Field("profile", ("traits", "tags"))
    assert evaluate(Contains(tags, Literal(None)), RECORDS) is False


def test_tuples_count_as_lists_and_odd_python_values_never_match() -> None:
    records: dict[str, Any] = {"profile": {"t": ("a", 1), "o": object()}}
    check("profile@t CONTAINS 'a'", True, records)
    check("profile@o EXISTS", True, records)
    check("profile@o IS NOT NULL", True, records)
    check("profile@o == 'x'", False, records)
    check("profile@o != 'x'", True, records)
    check("profile@o > 1", False, records)


def test_evaluation_never_raises_on_any_json_value() -> None:
    values: list[Any] = [None, True, False, 0, -1, 2**70, 1.5, "", "x", [], [1], {}, {"a": 1}]
    texts = [text for text, _ in ROWS]
    for value in values:
        records = {"profile": {"traits": dict.fromkeys(PROFILE["traits"], value)}}
        for text in texts:
            assert isinstance(evaluate(parse(text), records), bool)
