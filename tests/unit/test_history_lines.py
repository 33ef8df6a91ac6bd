"""Lines of a history file (collect/history_lines.py) and the bounds of event times
(model/event_time.py): what each shape means, and what is refused with which words."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tessera.collect.history_lines import LineProblem, decode_line
from tessera.model.event_time import (
    EVENT_PAST_BOUND,
    filed_moment,
    import_time_problem,
    live_time_warning,
)


def _line(document: dict[str, object]) -> bytes:
    return json.dumps(document).encode()


def test_a_tracardi_event_takes_its_create_time_naive_as_utc_and_its_tag_values() -> None:
    item = decode_line(
        _line(
            {
                "id": "e-1",
                "type": "Page View",
                "metadata": {
                    "time": {"insert": "2024-03-02T10:00:05", "create": "2024-03-02T09:59:58"}
                },
                "profile": {"id": "p-1"},
                "session": {"id": "s-1", "start": "2024-03-02T09:00:00", "duration": 0},
                "source": {"id": "elsewhere"},
                "properties": {"url": "/"},
                "tags": {"values": ["a", "b"], "count": 2},
            }
        ),
        1,
        max_depth=32,
    )
    assert item.event.time == datetime(2024, 3, 2, 9, 59, 58, tzinfo=UTC)
    assert item.event.type == "page-view"
    assert item.event.tags == ["a", "b"]
    assert (item.profile_id, item.session_id) == ("p-1", "s-1")
    assert item.visitor == "p\x00p-1"


def test_a_tessera_event_keeps_its_time_zone_and_may_have_no_visitor() -> None:
    item = decode_line(
        _line({"id": "e-2", "type": "audit", "time": "2025-01-01T01:00:00+02:00", "tags": []}),
        4,
        max_depth=32,
    )
    assert item.event.time == datetime(2024, 12, 31, 23, 0, tzinfo=UTC)
    assert (item.profile_id, item.session_id, item.visitor) == (None, None, "")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[1, 2]", "line 9: expected a JSON object, got list"),
        (
            b'{"id": "x", "type": "v", "time": "2024-01-01", "properties": []}',
            "line 9: properties:",
        ),
        (b'{"id": "x/y", "type": "v", "time": "2024-01-01"}', "line 9: id: must be"),
        (b'{"id": "x", "type": "v", "time": "2024-01-01", "profile": "p"}', "line 9: profile:"),
        (b'{"id": "x", "type": "v", "metadata": {"time": {}}}', "line 9: time: missing"),
        (b'{"id": 5, "type": "v", "time": "2024-01-01"}', "line 9: id: every imported event"),
    ],
)
def test_a_line_that_is_no_event_is_named(raw: bytes, message: str) -> None:
    with pytest.raises(LineProblem) as problem:
        decode_line(raw, 9, max_depth=32)
    assert problem.value.message.startswith(message), problem.value.message


def test_too_deep_properties_are_refused() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    raw = _line({"id": "x", "type": "v", "time": "2024-01-01", "properties": deep})
    with pytest.raises(LineProblem, match="line 2: properties: nested deeper than 32"):
        decode_line(raw, 2, max_depth=32)


def test_live_times_are_filed_within_bounds_and_named() -> None:
    arrived = datetime(2026, 6, 1, tzinfo=UTC)
    old = arrived - EVENT_PAST_BOUND - timedelta(days=30)
    assert filed_moment(old, arrived) == arrived - EVENT_PAST_BOUND
    warning = live_time_warning("events[3].time", old, arrived)
    assert warning is not None and warning.startswith("events[3].time:")
    assert "too far before" in warning
    assert live_time_warning("t", arrived - timedelta(days=300), arrived) is None
    ahead = live_time_warning("t", arrived + timedelta(days=2), arrived)
    assert ahead is not None and "too far after" in ahead


def test_import_times_are_bounded_by_the_earliest_year_the_retention_and_tomorrow() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert import_time_problem(now - timedelta(days=3 * 365), now, None) is None
    assert import_time_problem(datetime(1999, 12, 31, tzinfo=UTC), now, None) == (
        "time before 2000-01-01"
    )
    assert import_time_problem(now - timedelta(days=400), now, 365) == (
        "time older than the event retention (365 days)"
    )
    assert import_time_problem(now + timedelta(days=2), now, None) == (
        "time more than a day after the import"
    )
