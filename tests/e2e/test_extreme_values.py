"""Extreme numbers and strings cannot break a profile (issue 12, "Poisoning").

A hypothesis property drives the mapping (built-in and custom rules), the workflow actions that
compute (calculator, increment_trait, increase_interest) and merges (identify with shared
e-mails) of a real `tessera serve` with the extremes a client can send (1e308, -1e308, 2**63,
2**1000, "nan"/"inf" strings, huge strings, deep objects), then reads, exports, searches and
erases every profile it made over HTTP: never a 5xx, and every stored `stats` and `interests`
value a finite number within TESSERA_MAX_NUMBER.

Before the bounds of model/bounds.py, two purchases of 1e308 made `stats.ltv` infinite, stored
as null, and every later read of the profile answered 500.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.modes import server_in_mode
from tests.support.server import RunningServer, running_server

MAX_NUMBER = 2**53 - 1
EVENT_TYPE = "x-num"
SOURCE = "extreme"

EXTREME_NUMBERS: list[Any] = [
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    2**63,
    -(2**63),
    2**64,
    2**1000,
    -(2**1000),
    MAX_NUMBER,
    MAX_NUMBER + 1,
    0,
    1,
    -1,
    0.1,
]
EXTREME_STRINGS: list[Any] = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e309",
    "-1e309",
    "1e308",
    "9" * 400,
    "1" + "0" * 330,
    "x" * 200_000,
    "",
]


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"n": 1e308}
    for level in range(depth):
        value = {f"k{level}": value}
    return value


values = st.one_of(
    st.sampled_from(EXTREME_NUMBERS),
    st.sampled_from(EXTREME_STRINGS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.builds(_deep, st.integers(min_value=1, max_value=40)),
)
properties = st.fixed_dictionaries(
    {
        "n": values,
        "k": values,
        "total": values,
        "s": values,
        "v": values,
        "obj": st.dictionaries(st.sampled_from(["a", "b", "n", "deep"]), values, max_size=3),
    }
)
step = st.tuples(
    st.integers(min_value=0, max_value=2),  # which visitor
    st.sampled_from([EVENT_TYPE, "purchase", "identify", "page-view"]),
    properties,
    st.sampled_from(["a@example.com", "b@example.com"]),
)


def _mapping_rule() -> dict[str, Any]:
    mappings = [
        {"event": "properties.n", "op": "increment", "profile": "stats.sum"},
        {"event": "properties.n", "op": "equals", "profile": "stats.set"},
        {"event": "properties.n", "op": "increment", "profile": "traits.total"},
        {"event": "properties.k", "op": "equals", "profile": "interests.topic"},
        {"event": "properties.k", "op": "increment", "profile": "interests.topic"},
        {"event": "properties.obj", "op": "merge", "profile": "traits"},
        {"event": "properties.v", "op": "append", "profile": "traits.list"},
        {"event": "properties.s", "op": "equals", "profile": "traits.text"},
    ]
    return {"name": "extremes", "event_type": EVENT_TYPE, "mappings": mappings}


def _workflows() -> list[list[dict[str, Any]]]:
    def node(node_id: str, action: str, **config: Any) -> dict[str, Any]:
        return {"id": node_id, "action": action, "config": config}

    computing = [
        node(
            "c",
            "calculator",
            expression="event@properties.k * 10 + profile@stats.events",
            target="profile@stats.calc",
        ),
        node("i", "increment_trait", path="profile@stats.wf", by=1e308),
        node("t", "increment_trait", path="profile@traits.wf", by=2**62),
        node("x", "increase_interest", interest="wf", value=1e12),
    ]
    return [[node("s", "start"), step] for step in computing]


def _install(api: httpx.Client) -> None:
    answer = api.post("/event-source", json={"id": SOURCE, "name": "Extreme"})
    assert answer.status_code in (200, 201), answer.text
    answer = api.post("/event-mapping", json=_mapping_rule())
    assert answer.status_code in (200, 201), answer.text
    for index, nodes in enumerate(_workflows()):
        workflow_id = f"extreme-{index}"
        answer = api.post(
            "/workflow",
            json={
                "id": workflow_id,
                "name": workflow_id,
                "draft": {"nodes": nodes, "edges": [{"source": "s", "target": nodes[1]["id"]}]},
                "deploy": True,
            },
        )
        assert answer.status_code in (200, 201), answer.text
        answer = api.post(
            "/rule",
            json={"name": workflow_id, "event_type": EVENT_TYPE, "workflow_id": workflow_id},
        )
        assert answer.status_code in (200, 201), answer.text


@pytest.fixture(scope="module", params=["embedded-sync", "distributed-sync"])
def extreme_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, httpx.Client]]:
    data_dir = tmp_path_factory.mktemp("extreme") / "data"
    with server_in_mode(request.param, data_dir, {"TESSERA_WORKFLOW_CACHE_SECONDS": "0"}) as srv:
        api = srv.client(srv.token())
        _install(api)
        yield srv, api


def _check_numbers(profile: dict[str, Any]) -> None:
    for part in ("stats", "interests"):
        for name, value in profile[part].items():
            assert isinstance(value, int | float) and not isinstance(value, bool), (part, name)
            assert abs(value) <= MAX_NUMBER, (part, name, value)


def _no_server_error(answer: httpx.Response, what: str) -> None:
    assert answer.status_code < 500, f"{what}: {answer.status_code} {answer.text[:500]}"


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(step, min_size=1, max_size=6))
def test_extremes_never_break_a_profile(
    extreme_server: tuple[RunningServer, httpx.Client],
    steps: list[tuple[int, str, dict[str, Any], str]],
) -> None:
    server, api = extreme_server
    visitor = server.client()
    run = uuid.uuid4().hex[:8]
    sessions = [f"s-{run}-{index}" for index in range(3)]
    profiles: set[str] = set()
    for who, event_type, props, email in steps:
        if event_type == "identify":
            props = {"email": f"{run}-{email}", "traits": props["obj"]}
        answer = visitor.post(
            "/track",
            json={
                "source": {"id": SOURCE},
                "session": {"id": sessions[who]},
                "events": [{"type": event_type, "properties": props}],
            },
        )
        _no_server_error(answer, f"/track {event_type}")
        if answer.status_code == 200:
            profiles.add(answer.json()["profile"]["id"])
    searched = api.post("/profiles/search", json={"where": "profile@stats.sum > 0", "limit": 50})
    _no_server_error(searched, "profile search")
    _no_server_error(api.post("/profiles/search", json={"limit": 50}), "profile search")
    _no_server_error(api.post("/events/search", json={"limit": 50}), "event search")
    for profile_id in profiles:
        read = api.get(f"/profile/{profile_id}")
        _no_server_error(read, "read")
        assert read.status_code == 200, read.text
        _check_numbers(read.json())
        exported = api.get(f"/profile/{profile_id}/export")
        _no_server_error(exported, "export")
        assert exported.status_code == 200, exported.text
    for profile_id in profiles:
        erased = api.delete(f"/profile/{profile_id}", params={"with_data": "true"})
        _no_server_error(erased, "erase")
        assert erased.status_code in (200, 404), erased.text  # 404: merged into one erased


def test_json_without_a_spelling_for_infinity_is_refused(
    extreme_server: tuple[RunningServer, httpx.Client],
) -> None:
    server, _api = extreme_server
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        body = (
            b'{"source": {"id": "' + SOURCE.encode() + b'"}, "events": [{"type": "purchase", '
            b'"properties": {"total": ' + literal + b"}}]}"
        )
        answer = server.client().post(
            "/track", content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= answer.status_code < 500, (literal, answer.status_code, answer.text)


def _purchase(visitor: httpx.Client, session: str, total: float) -> dict[str, Any]:
    answer = visitor.post(
        "/track",
        json={
            "source": {"id": SOURCE},
            "session": {"id": session},
            "events": [{"type": "purchase", "properties": {"total": total}}],
        },
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_two_huge_purchases_leave_a_readable_profile(
    extreme_server: tuple[RunningServer, httpx.Client],
) -> None:
    """The issue's reproduction: the second sum is refused with a warning, the value stays."""
    server, api = extreme_server
    visitor = server.client()
    session = f"s-{uuid.uuid4().hex}"
    first = _purchase(visitor, session, 8e15)
    assert first["warnings"] == []
    second = _purchase(visitor, session, 8e15)
    assert any("stats.ltv" in w and "TESSERA_MAX_NUMBER" in w for w in second["warnings"])
    profile = api.get(f"/profile/{first['profile']['id']}")
    assert profile.status_code == 200, profile.text
    assert profile.json()["stats"]["ltv"] == 8e15
    assert profile.json()["stats"]["orders"] == 2


def test_a_profile_stored_with_null_stats_is_read_exported_and_erased(tmp_path: Path) -> None:
    """A profile an older version stored with `null` in `stats` and `interests` (an infinite
    sum) is readable again: its lost numbers are left out, and it can be tracked, searched,
    exported and erased."""
    data_dir = tmp_path / "data"
    session = f"s-{uuid.uuid4().hex}"
    password = uuid.uuid4().hex
    with running_server(data_dir, admin_password=password) as server:
        api = server.client(server.token())
        api.post("/event-source", json={"id": SOURCE, "name": "x"}).raise_for_status()
        profile_id = _purchase(server.client(), session, 10)["profile"]["id"]
    with sqlite3.connect(data_dir / "events.sqlite") as connection:
        (doc,) = connection.execute(
            "SELECT doc FROM profiles WHERE id = ?", (profile_id,)
        ).fetchone()
        stored = msgspec.json.decode(doc)
        stored["stats"]["ltv"] = None
        stored["interests"]["bikes"] = None
        connection.execute(
            "UPDATE profiles SET doc = ? WHERE id = ?",
            (msgspec.json.encode(stored).decode(), profile_id),
        )
    with running_server(data_dir, admin_password=password) as server:
        api = server.client(server.token())
        read = api.get(f"/profile/{profile_id}")
        assert read.status_code == 200, read.text
        assert "ltv" not in read.json()["stats"] and read.json()["stats"]["orders"] == 1
        searched = api.post("/profiles/search", json={})
        assert searched.status_code == 200, searched.text
        _purchase(server.client(), session, 5)
        assert api.get(f"/profile/{profile_id}").json()["stats"]["ltv"] == 5
        assert api.get(f"/profile/{profile_id}/export").status_code == 200
        erased = api.delete(f"/profile/{profile_id}", params={"with_data": "true"})
        assert erased.status_code == 200, erased.text
        assert "warning" in server.log().lower()
