"""Merge keys and the merging of profile documents."""

from __future__ import annotations

from typing import Any

import pytest

from tessera.identity.keys import (
    EMAIL_PATH,
    IDENTIFIER_PATH,
    PHONE_PATH,
    digest,
    is_blocked,
    key_values,
    normalise,
)
from tessera.identity.merge import merge_documents


@pytest.mark.parametrize(
    ("path", "raw", "expected"),
    [
        (EMAIL_PATH, "  Ann@Example.COM ", "ann@example.com"),
        (EMAIL_PATH, "not-an-address", None),
        (EMAIL_PATH, "@example.com", None),
        (PHONE_PATH, "+48 600-100-200", "+48600100200"),
        (PHONE_PATH, "0048 600 100 200", "+48600100200"),
        (PHONE_PATH, "(600) 100 200", "600100200"),
        (IDENTIFIER_PATH, " CRM-17 ", "crm-17"),
        (IDENTIFIER_PATH, 1234, "1234"),
        (IDENTIFIER_PATH, True, None),
        (IDENTIFIER_PATH, {"a": 1}, None),
        (IDENTIFIER_PATH, "x" * 400, None),
    ],
)
def test_values_are_normalised(path: str, raw: Any, expected: str | None) -> None:
    assert normalise(path, raw) == expected


@pytest.mark.parametrize(
    "value", ["", "null", "NONE", "undefined", "anonymous", "0", "-1", "0000", "00-00", "000@x.io"]
)
def test_values_that_identify_nobody_are_blocked(value: str) -> None:
    assert is_blocked(value, frozenset())


def test_configured_values_are_blocked_and_real_ones_are_not() -> None:
    assert is_blocked("test@example.com", frozenset({"test@example.com"}))
    assert not is_blocked("ann@example.com", frozenset())
    assert not is_blocked("+48600100200", frozenset())


@pytest.mark.parametrize(
    "phone", ["-1", " -1 ", "+1", "1", "112", "12-34", "(0) 123 45", "+123456"]
)
def test_phones_too_short_for_anyone_identify_nobody(phone: str) -> None:
    # "-1" is blocked as sent but normalises to "1": without the length rule it merged
    # everyone who sent it.
    document = {"data": {"contact": {"phone": {"main": phone}}}}
    values, warnings = key_values(document, [PHONE_PATH], salt="s" * 20, extra_blocked=frozenset())
    assert values == [] and len(warnings) == 1
    assert normalise(PHONE_PATH, "+1234567") == "+1234567"  # the shortest real numbers pass


@pytest.mark.parametrize(
    ("blocked", "sent"),
    [
        ("555-0100-200", "5550100200"),  # blocked as written, sent normalised
        ("5550100200", "555 0100 200"),  # blocked normalised, sent as written
        ("+1 (555) 010-0200", "0015550100200"),  # two spellings of one number
    ],
)
def test_a_blocked_phone_is_blocked_in_every_spelling(blocked: str, sent: str) -> None:
    document = {"data": {"contact": {"phone": {"main": sent}}}}
    extra = frozenset({blocked.lower()})
    values, _warnings = key_values(document, [PHONE_PATH], salt="s" * 20, extra_blocked=extra)
    assert values == []
    unblocked, _ = key_values(document, [PHONE_PATH], salt="s" * 20, extra_blocked=frozenset())
    assert len(unblocked) == 1


def test_digests_depend_on_salt_path_and_value() -> None:
    base = digest("salt-one-is-long-enough", EMAIL_PATH, "ann@example.com")
    assert base == digest("salt-one-is-long-enough", EMAIL_PATH, "ann@example.com")
    assert base != digest("salt-two-is-long-enough", EMAIL_PATH, "ann@example.com")
    assert base != digest("salt-one-is-long-enough", IDENTIFIER_PATH, "ann@example.com")
    assert "ann" not in base


def test_key_values_reads_lists_and_warns_on_blocked() -> None:
    document = {"data": {"contact": {"email": {"main": ["a@x.io", "null", "A@X.IO "]}}}}
    values, warnings = key_values(document, [EMAIL_PATH], salt="s" * 20, extra_blocked=frozenset())
    assert [value.value for value in values] == ["a@x.io", "a@x.io"]
    assert len(warnings) == 1 and EMAIL_PATH in warnings[0]


def profile(updated: str, inserted: str, **parts: Any) -> dict[str, Any]:
    return {
        "id": parts.pop("id", "p"),
        "ids": parts.pop("ids", ["p"]),
        "metadata": {
            "time": {"insert": inserted, "update": updated, "last_visit": updated},
            "identity": parts.pop("identity", {}),
            "merges": [],
        },
        "stats": parts.pop("stats", {}),
        "traits": parts.pop("traits", {}),
        "data": parts.pop("data", {}),
        "segments": parts.pop("segments", []),
        "interests": parts.pop("interests", {}),
        "consents": parts.pop("consents", {}),
    }


def test_merge_loses_nothing_and_logs_conflicts() -> None:
    older = profile(
        "2026-01-05T00:00:00+00:00",
        "2026-01-01T00:00:00+00:00",
        id="a",
        ids=["a"],
        traits={"plan": "basic", "tags": ["x"], "address": {"city": "Oslo"}},
        stats={"visits": 3, "events": 10, "ltv": 5.5},
        segments=["new"],
        interests={"shoes": 1.0},
        identity={EMAIL_PATH: ["d1"]},
    )
    newer = profile(
        "2026-02-01T00:00:00+00:00",
        "2026-01-20T00:00:00+00:00",
        id="b",
        ids=["b"],
        traits={"plan": "pro", "tags": ["y", "x"], "address": {"zip": "0150"}, "age": 40},
        stats={"visits": 2, "events": 4, "ltv": 10},
        segments=["buyers", "new"],
        interests={"shoes": 2.0, "hats": 1.0},
        identity={EMAIL_PATH: ["d2"], PHONE_PATH: ["d3"]},
    )
    merged, log = merge_documents(older, newer)
    assert merged["traits"] == {
        "plan": "pro",  # the more recently updated profile wins a conflict
        "tags": ["x", "y"],
        "address": {"city": "Oslo", "zip": "0150"},
        "age": 40,
    }
    assert log.conflicts == [{"path": "traits.plan", "kept": "pro", "dropped": "basic"}]
    assert set(log.taken) == {"traits.plan", "traits.address.zip", "traits.age"}
    assert merged["stats"] == {"visits": 3, "events": 14, "ltv": 15.5}  # visits: recounted
    assert merged["interests"] == {"shoes": 3.0, "hats": 1.0}
    assert merged["segments"] == ["new", "buyers"]
    assert merged["ids"] == ["a", "b"]
    assert merged["metadata"]["time"]["insert"] == "2026-01-01T00:00:00+00:00"
    assert merged["metadata"]["time"]["update"] == "2026-02-01T00:00:00+00:00"
    assert merged["metadata"]["identity"] == {EMAIL_PATH: ["d1", "d2"], PHONE_PATH: ["d3"]}
    # The inputs are untouched.
    assert older["traits"]["plan"] == "basic"


def test_older_update_loses_conflicts() -> None:
    survivor = profile("2026-03-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00", traits={"a": 1})
    merged_in = profile("2026-02-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", traits={"a": 2})
    merged, log = merge_documents(survivor, merged_in)
    assert merged["traits"] == {"a": 1}
    assert log.conflicts == [{"path": "traits.a", "kept": 1, "dropped": 2}]
    assert log.taken == []
