"""The bounds of a profile (model/bounds.py) as mapping rules, workflow writes and merges meet
them: numbers finite and within TESSERA_MAX_NUMBER, size, trait keys, ids, merge history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from tessera.core.cache import RecordCache
from tessera.identity.merge import MergeRefused, merge_documents
from tessera.model.bounds import (
    SAFE_INTEGER,
    ProfileBudget,
    ProfileLimits,
    bounded_sum,
    trimmed_merges,
    within,
)
from tessera.model.processing import FieldMapping, MappingRule
from tessera.model.profile import Profile, add_to_stat, new_profile, profile_from_json
from tessera.pipeline.mapping import apply_mappings
from tessera.workflow.action import ActionContext, ActionError, ActionServices, write_path
from tessera.workflow.actions.calculator import Calculator
from tessera.workflow.actions.interests import IncreaseInterest
from tessera.workflow.actions.traits import IncrementTrait


def _profile(**parts: Any) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(new_profile("p1", "t", datetime.now(UTC)))
    document.update(parts)
    return document


def _rule(*mappings: FieldMapping) -> MappingRule:
    return MappingRule(
        tenant="t",
        id="r",
        name="r",
        event_type="x",
        created=datetime.now(UTC),
        mappings=list(mappings),
    )


def _apply(
    profile: dict[str, Any], properties: dict[str, Any], limits: ProfileLimits, *m: FieldMapping
) -> list[str]:
    warnings: list[str] = []
    apply_mappings(
        {"type": "x", "properties": properties},
        profile,
        [_rule(*m)],
        warnings=warnings,
        budget=ProfileBudget(profile, limits),
    )
    return warnings


@pytest.mark.parametrize(
    ("current", "amount", "expected"),
    [
        (1, 2, 3),
        (1e308, 1e308, None),
        (SAFE_INTEGER, 1, None),
        (-SAFE_INTEGER, -1, None),
        (2**1000, 1.0, None),  # int + float: OverflowError inside
        (2**1000, -(2**1000), 0),
        (0.5, 0.25, 0.75),
    ],
)
def test_sums_stay_finite_and_bounded(current: Any, amount: Any, expected: Any) -> None:
    assert bounded_sum(current, amount, SAFE_INTEGER) == expected


def test_within_compares_huge_integers_exactly() -> None:
    assert within(SAFE_INTEGER, SAFE_INTEGER) and not within(SAFE_INTEGER + 1, SAFE_INTEGER)
    assert not within(2**5000, 1e300) and not within(float("nan"), 1e300)


def test_add_to_stat_refuses_a_sum_past_the_bound() -> None:
    profile = new_profile("p", "t", datetime.now(UTC))
    profile.stats["events"] = SAFE_INTEGER
    assert add_to_stat(profile, "events", 1) is False
    assert profile.stats["events"] == SAFE_INTEGER
    assert add_to_stat(profile, "visits", 2) is True and profile.stats["visits"] == 2


def test_increment_past_the_bound_keeps_the_value_and_warns() -> None:
    profile = _profile(stats={"ltv": 8e15})
    inc = FieldMapping(event="properties.total", op="increment", profile="stats.ltv")
    warnings = _apply(profile, {"total": 8e15}, ProfileLimits(), inc)
    assert profile["stats"]["ltv"] == 8e15
    assert len(warnings) == 1 and "TESSERA_MAX_NUMBER" in warnings[0] and "stays" in warnings[0]


def test_a_number_past_the_bound_is_not_set_in_stats() -> None:
    profile = _profile()
    mapping = FieldMapping(event="properties.n", op="equals", profile="stats.n")
    for value in (2**63, "1e309", 1e300):
        warnings = _apply(profile, {"n": value}, ProfileLimits(), mapping)
        assert "n" not in profile["stats"] and warnings, value


def test_trait_keys_past_the_bound_are_refused_and_the_rest_taken() -> None:
    profile = _profile(traits={"a": 1, "b": 2})
    merge = FieldMapping(event="properties.obj", op="merge", profile="traits")
    name = FieldMapping(event="properties.name", op="equals", profile="data.pii.name")
    obj = {f"k{i}": i for i in range(10)}
    warnings = _apply(
        profile, {"obj": obj, "name": "Ann"}, ProfileLimits(max_traits=5), merge, name
    )
    assert len(profile["traits"]) == 5
    assert profile["data"]["pii"]["name"] == "Ann"  # the rest of the request is taken
    assert len(warnings) == 7 and all("TESSERA_MAX_PROFILE_TRAITS" in w for w in warnings)


def test_bytes_past_the_bound_are_refused_and_the_rest_taken() -> None:
    profile = _profile()
    limits = ProfileLimits(max_bytes=8192)
    big = FieldMapping(event="properties.text", op="equals", profile="traits.text")
    small = FieldMapping(event="properties.plan", op="equals", profile="traits.plan")
    warnings = _apply(profile, {"text": "x" * 10_000, "plan": "pro"}, limits, big, small)
    assert "text" not in profile["traits"] and profile["traits"]["plan"] == "pro"
    assert len(warnings) == 1 and "TESSERA_MAX_PROFILE_BYTES" in warnings[0]
    # Step by step it cannot get past either.
    append = FieldMapping(event="properties.text", op="append", profile="traits.list")
    for _ in range(20):
        _apply(profile, {"text": "y" * 700}, limits, append)
    assert len(msgspec.json.encode(profile)) <= 8192


def test_merge_history_keeps_the_newest_and_summarises_the_rest() -> None:
    entries = [
        {"time": f"2024-01-{day:02d}T00:00:00+00:00", "merged_id": str(day)} for day in range(1, 29)
    ]
    trimmed = trimmed_merges(entries, 5)
    assert trimmed[0] == {
        "summary": True,
        "count": 23,
        "first": "2024-01-01T00:00:00+00:00",
        "last": "2024-01-23T00:00:00+00:00",
    }
    assert [entry["merged_id"] for entry in trimmed[1:]] == ["24", "25", "26", "27", "28"]
    again = trimmed_merges([*trimmed, {"time": "2024-02-01T00:00:00+00:00", "merged_id": "x"}], 5)
    assert again[0]["count"] == 24 and again[0]["last"] == "2024-01-24T00:00:00+00:00"
    assert len(again) == 6
    assert trimmed_merges(entries[:3], 5) == entries[:3]


def test_a_merge_past_a_bound_is_refused() -> None:
    survivor = _profile(ids=["a", "b"])
    merged = _profile(id="c", ids=["c", "d"])
    with pytest.raises(MergeRefused, match="TESSERA_MAX_PROFILE_IDS") as refused:
        merge_documents(survivor, merged, ProfileLimits(max_ids=3))
    assert "'c'" not in refused.value.message  # no other person's id in an answer
    many = _profile(id="c", traits={f"k{i}": i for i in range(8)})
    with pytest.raises(MergeRefused, match="TESSERA_MAX_PROFILE_TRAITS"):
        merge_documents(_profile(traits={"x": 1, "y": 2}), many, ProfileLimits(max_traits=9))
    big = _profile(id="c", traits={"text": "x" * 6000})
    with pytest.raises(MergeRefused, match="TESSERA_MAX_PROFILE_BYTES"):
        merge_documents(_profile(traits={"t": "y" * 3000}), big, ProfileLimits(max_bytes=8192))


def test_merged_counters_that_would_overflow_keep_the_survivors() -> None:
    survivor = _profile(stats={"ltv": 8e15, "orders": 2}, interests={"bikes": 1.0})
    merged = _profile(id="c", stats={"ltv": 8e15, "orders": 3}, interests={"bikes": 2.0})
    result, log = merge_documents(survivor, merged, ProfileLimits())
    assert result["stats"]["ltv"] == 8e15 and result["stats"]["orders"] == 5
    assert result["interests"]["bikes"] == 3.0
    assert log.conflicts == [{"path": "stats.ltv", "kept": 8e15, "dropped": 8e15}]


def test_a_merge_trims_the_history_it_adds_to() -> None:
    history = [{"time": f"2024-01-{day:02d}T00:00:00+00:00"} for day in range(1, 11)]
    survivor = _profile(metadata={**_profile()["metadata"], "merges": history})
    result, _log = merge_documents(survivor, _profile(id="c"), ProfileLimits(max_merges=4))
    assert len(result["metadata"]["merges"]) == 4  # a summary and 3: room for the new entry
    assert result["metadata"]["merges"][0]["count"] == 7


def test_stored_null_numbers_are_left_out_when_read() -> None:
    document = _profile(stats={"visits": 1, "ltv": None}, interests={"a": None, "b": 2.0})
    profile = profile_from_json(msgspec.json.encode(document))
    assert profile.stats == {"visits": 1} and profile.interests == {"b": 2.0}


def _context(services: ActionServices, profile: dict[str, Any], limits: ProfileLimits) -> Any:
    return ActionContext(
        tenant="t",
        event={"id": "e", "type": "x", "properties": {}},
        profile=profile,
        session=None,
        now=datetime.now(UTC),
        services=ActionServices(
            http=services.http, memory=services.memory, outbound=services.outbound, limits=limits
        ),
    )


async def test_workflow_writes_obey_the_bounds(services: ActionServices) -> None:
    profile = _profile(traits={"a": 1})
    context = _context(services, profile, ProfileLimits(max_traits=2, max_bytes=8192))
    write_path("profile@traits.b", 2, context, {})
    with pytest.raises(ActionError, match="TESSERA_MAX_PROFILE_TRAITS"):
        write_path("profile@traits.c", 3, context, {})
    with pytest.raises(ActionError, match="TESSERA_MAX_PROFILE_BYTES"):
        write_path("profile@data.text", "x" * 9000, context, {})
    with pytest.raises(ActionError, match="TESSERA_MAX_NUMBER"):
        write_path("profile@stats.n", 2**63, context, {})
    with pytest.raises(ActionError, match="not finite"):
        write_path("profile@traits.a", {"x": float("inf")}, context, {})
    assert profile["traits"] == {"a": 1, "b": 2} and "n" not in profile["stats"]


async def test_computing_actions_refuse_results_past_the_bound(services: ActionServices) -> None:
    profile = _profile(stats={"n": SAFE_INTEGER})
    context = _context(services, profile, ProfileLimits())
    increment = IncrementTrait.build({"path": "profile@stats.n", "by": 1})
    with pytest.raises(ActionError, match="TESSERA_MAX_NUMBER"):
        await increment.run({}, context)
    calculator = Calculator.build({"expression": "profile@stats.n * 2", "target": "payload@x"})
    with pytest.raises(ActionError, match="TESSERA_MAX_NUMBER"):
        await calculator.run({}, context)
    profile["interests"] = {"bikes": SAFE_INTEGER - 1}
    interest = IncreaseInterest.build({"interest": "bikes", "value": 1e12})
    with pytest.raises(ActionError, match="TESSERA_MAX_NUMBER"):
        await interest.run({}, context)
    assert profile["stats"]["n"] == SAFE_INTEGER


async def test_the_in_process_cache_is_bounded_by_bytes() -> None:
    """TESSERA_CACHE_MAX_BYTES: least recently used records go first once the encoded bytes
    pass the bound, however few entries that is."""
    cache = RecordCache(Profile, max_entries=100_000, ttl_s=600, max_bytes=50_000)
    made = new_profile("p", "t", datetime.now(UTC))
    for index in range(200):
        made.id = f"p{index}"
        made.traits = {"blob": "x" * 2000}
        await cache.put(made.id, made)
        assert cache.bytes <= 50_000
        if index == 150:
            assert await cache.get("p140") is not None  # used: kept longer than p141 …
    assert 20 <= len(cache) <= 25
    assert await cache.get("p199") is not None and await cache.get("p141") is None
    assert await cache.get("p140") is None  # … but not for ever
    await cache.discard("p199")
    assert cache.bytes < 50_000
