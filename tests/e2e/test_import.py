"""History import, black box, embedded and distributed: `tessera import` sends a file of
Tracardi- and Tessera-shaped events spread over three years to a running server.

- every event is filed by its own time (distributed: the Elasticsearch index holding it is
  the partition of its time; both modes: it is taken in as of its time), profiles and
  sessions are first seen at their first event, counters are exact;
- a second import of the same file stores and counts nothing;
- an import killed midway (SIGKILL) and run again ends the same;
- a bad line is named, and nothing is sent; a public source may not import;
- the live path says when it files an event elsewhere than its time.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from elasticsearch import Elasticsearch

from tessera.model.event_time import EVENT_PAST_BOUND
from tessera.storage.elastic.naming import partition
from tests.support.cli import run_tessera
from tests.support.elastic import URL as ELASTIC_URL
from tests.support.history_file import Planned, write_history
from tests.support.modes import server_in_mode
from tests.support.server import RunningServer
from tests.support.sources import ServerSource, make_server_source

MODES = ("embedded-sync", "distributed-sync")


@pytest.fixture(scope="module", params=MODES)
def installed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, RunningServer, httpx.Client, ServerSource]]:
    mode = str(request.param)
    with server_in_mode(mode, tmp_path_factory.mktemp("import") / "data") as server:
        api = server.client(server.token())
        source = make_server_source(api, "Old shop", id="old-shop")
        yield mode, server, api, source


def _import(
    server: RunningServer, source: ServerSource, file: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_tessera(
        {"TESSERA_IMPORT_KEY": source.key},
        "import",
        str(file),
        "--source",
        source.id,
        "--url",
        server.base_url,
        *extra,
        timeout=600,
    )


def _get(api: httpx.Client, path: str) -> dict[str, Any]:
    answer = api.get(path)
    assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text}"
    body: dict[str, Any] = answer.json()
    return body


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _state(api: httpx.Client, planned: Planned) -> dict[str, Any]:
    """What the server holds of the planned visitors: counters and times, per record."""
    state: dict[str, Any] = {}
    for profile_id, sessions in planned.profiles.items():
        profile = _get(api, f"/profile/{profile_id}")
        state[profile_id] = (profile["stats"], profile["metadata"]["time"])
        for session_id in sessions:
            session = _get(api, f"/session/{session_id}")
            state[session_id] = (session["events"], session["metadata"]["time"])
    return state


def _check_records(api: httpx.Client, planned: Planned) -> None:
    for profile_id, sessions in planned.profiles.items():
        profile = _get(api, f"/profile/{profile_id}")
        assert profile["id"] == profile_id
        assert profile["stats"]["events"] == planned.event_count(profile_id)
        assert profile["stats"]["visits"] == len(sessions)
        times = profile["metadata"]["time"]
        assert _moment(times["insert"]) == planned.first_seen(profile_id)
        last = max(max(t) for t in sessions.values())
        assert _moment(times["update"]) == last
        for session_id, event_times in sessions.items():
            session = _get(api, f"/session/{session_id}")
            assert session["profile"]["id"] == profile_id
            assert session["events"] == len(event_times)
            assert _moment(session["metadata"]["time"]["insert"]) == min(event_times)
            assert _moment(session["metadata"]["time"]["update"]) == max(event_times)
    for event_id, at in planned.events.items():
        event = _get(api, f"/event/{event_id}")
        assert _moment(event["time"]) == at
        # Taken in as of its own time (the batch of its visit), not as of the import.
        arrived = _moment(event["metadata"]["insert"])
        assert at <= arrived <= at + timedelta(hours=6), (event_id, at, arrived)
    for event_id in planned.refused:
        assert api.get(f"/event/{event_id}").status_code == 404


def _check_partitions(server: RunningServer, planned: Planned) -> None:
    """Distributed: the index holding each record is the partition of its own time."""
    prefix = server.env["TESSERA_ELASTIC_INDEX_PREFIX"]
    client = Elasticsearch(ELASTIC_URL, request_timeout=30)
    try:
        client.indices.refresh(index=f"{prefix}.*")
        expected: dict[str, str] = {}
        for event_id, at in planned.events.items():
            expected[event_id] = "event.v1-" + partition(at, "month")
        for profile_id, sessions in planned.profiles.items():
            expected[profile_id] = "profile.v1-" + partition(planned.first_seen(profile_id), "year")
            for session_id, times in sessions.items():
                expected[session_id] = "session.v1-" + partition(min(times), "quarter")
        found = client.search(
            index=f"{prefix}.*",
            query={"ids": {"values": list(expected)}},
            size=len(expected) * 2,
            source=False,
        )
        where = {hit["_id"]: hit["_index"] for hit in found["hits"]["hits"]}
        assert len(found["hits"]["hits"]) == len(expected)
        for record_id, ending in expected.items():
            assert where.get(record_id, "").endswith(ending), (record_id, where.get(record_id))
        # The file spans three years, back beyond the live path's bound (model/event_time.py).
        assert max(planned.events.values()) - min(planned.events.values()) > timedelta(days=1000)
        assert min(planned.events.values()) < datetime.now(UTC) - EVENT_PAST_BOUND
    finally:
        client.close()


def _imported(output: str) -> tuple[int, int]:
    found = re.search(r"Imported ([\d,]+) events; ([\d,]+) were stored before", output)
    assert found is not None, output
    return int(found.group(1).replace(",", "")), int(found.group(2).replace(",", ""))


def _history(
    tmp_path: Path, name: str, *, profiles: int, seed: int, refused: bool
) -> tuple[str, Path, Planned]:
    """A history file of visitors whose ids start with a tag of this test's own."""
    tag = f"{name}{uuid.uuid4().hex[:8]}"
    file = tmp_path / "history.jsonl"
    return tag, file, write_history(file, tag, profiles=profiles, seed=seed, refused=refused)


def _totals_hold(api: httpx.Client, tag: str, planned: Planned) -> None:
    """As many profiles and events as planned, none more (no visitor split in two)."""
    _count(api, "/profiles/search", f"profile@id starts with '{tag}-'", len(planned.profiles))
    _count(api, "/events/search", f"event@id starts with '{tag}-'", len(planned.events))


def _count(api: httpx.Client, path: str, where: str, expected: int) -> None:
    """Searches may lag by the refresh interval: wait for the count, within bounds."""
    deadline = time.monotonic() + 30
    while True:
        total = _get_total(api, path, where)
        if total == expected or time.monotonic() > deadline:
            assert total == expected, f"{where}: {total}, expected {expected}"
            return
        time.sleep(0.5)


def _get_total(api: httpx.Client, path: str, where: str) -> int:
    answer = api.post(path, json={"where": where, "limit": 1})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["total"])


def test_import_files_by_own_time_counts_once_and_again_changes_nothing(
    installed: tuple[str, RunningServer, httpx.Client, ServerSource], tmp_path: Path
) -> None:
    mode, server, api, source = installed
    tag, file, planned = _history(tmp_path, "imp", profiles=12, seed=7, refused=True)

    first = _import(server, source, file)
    assert first.returncode == 0, first.stderr
    # Counted once each: stored now, or (a chunk the CLI sent again after a 503) stored by
    # its first attempt.
    stored, duplicates = _imported(first.stderr)
    assert stored + duplicates == len(planned.events), first.stderr
    assert "Refused 1 events: time before 2000-01-01" in first.stderr
    _check_records(api, planned)
    if mode.startswith("distributed"):
        _check_partitions(server, planned)
    _totals_hold(api, tag, planned)
    before = _state(api, planned)

    # The same file again (the checkpoint says it is done; --restart sends it all again).
    done = _import(server, source, file)
    assert done.returncode == 0, done.stderr
    again = _import(server, source, file, "--restart")
    assert again.returncode == 0, again.stderr
    assert f"Imported 0 events; {len(planned.events)} were stored before" in again.stderr
    assert _state(api, planned) == before
    _totals_hold(api, tag, planned)


def test_import_killed_midway_resumes_to_the_same_result(
    installed: tuple[str, RunningServer, httpx.Client, ServerSource], tmp_path: Path
) -> None:
    _mode, server, api, source = installed
    tag, file, planned = _history(tmp_path, "kill", profiles=80, seed=11, refused=False)
    checkpoint = tmp_path / "checkpoint.sqlite"
    command = [
        sys.executable, "-m", "tessera", "import", str(file), "--source", source.id,
        "--url", server.base_url, "--checkpoint", str(checkpoint), "--chunk-lines", "10",
    ]  # fmt: skip
    env = {**_clean_env(), "TESSERA_IMPORT_KEY": source.key}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    total = len(planned.events)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        done = _done(checkpoint)
        if done >= total // 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the import ended before it could be killed midway"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert 0 < _done(checkpoint) < total

    resumed = _import(server, source, file, "--checkpoint", str(checkpoint))
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stderr
    _check_records(api, planned)
    _totals_hold(api, tag, planned)


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}


def _done(checkpoint: Path) -> int:
    try:
        with sqlite3.connect(checkpoint, timeout=1) as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'done'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def test_bad_lines_are_named_and_nothing_is_sent(
    installed: tuple[str, RunningServer, httpx.Client, ServerSource], tmp_path: Path
) -> None:
    _mode, server, api, source = installed
    tag = f"bad{uuid.uuid4().hex[:8]}"
    good = f'{{"id": "{tag}-1", "type": "view", "time": "2024-05-01T10:00:00Z"}}'
    cases = {
        "{not json": "line 2: not a JSON document",
        '{"type": "view", "time": "2024-05-01T10:00:00Z"}': "line 2: id: every imported",
        f'{{"id": "{tag}-2", "type": "view"}}': "line 2: time: missing",
        f'{{"id": "{tag}-2", "type": "a b/c", "time": "2024-05-01"}}': "line 2: type:",
        f'{{"id": "{tag}-2", "type": "v", "time": "yesterday"}}': "line 2: time: 'yesterday'",
        f'{{"id": "{tag}-2", "type": "v", "time": "2024-05-01", "tags": [1]}}': "line 2: tags:",
    }
    for bad, message in cases.items():
        file = tmp_path / "bad.jsonl"
        file.write_text(f"{good}\n{bad}\n")
        result = _import(server, source, file, "--restart")
        assert result.returncode == 1, result.stderr
        assert f"{file}, {message}" in " ".join(result.stderr.split()), result.stderr
        assert "nothing was sent" in result.stderr
        # The endpoint itself says the same (a client other than the CLI), as a 422.
        answer = httpx.post(
            f"{server.base_url}/import/events",
            params={"source": source.id},
            headers=source.headers,
            content=f"{good}\n{bad}\n".encode(),
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(message), answer.text
    assert api.get(f"/event/{tag}-1").status_code == 404


def test_only_a_server_source_with_its_key_imports(
    installed: tuple[str, RunningServer, httpx.Client, ServerSource],
) -> None:
    _mode, server, api, source = installed
    line = b'{"id": "pub-1", "type": "view", "time": "2024-05-01T10:00:00Z"}'
    target = f"{server.base_url}/import/events"
    public = api.post("/event-source", json={"name": "Web", "id": f"web-{uuid.uuid4().hex[:6]}"})
    assert public.status_code in (200, 201), public.text
    refused = httpx.post(target, params={"source": public.json()["id"]}, content=line)
    assert refused.status_code == 403
    assert "server source" in refused.json()["detail"]
    keyless = httpx.post(target, params={"source": source.id}, content=line)
    assert keyless.status_code == 401
    wrong = httpx.post(
        target,
        params={"source": source.id},
        content=line,
        headers={"Authorization": "Bearer not-the-key"},
    )
    assert wrong.status_code == 401
    assert "not-the-key" not in wrong.text
    assert api.get("/event/pub-1").status_code == 404


def test_live_events_out_of_bounds_are_taken_with_a_warning(
    installed: tuple[str, RunningServer, httpx.Client, ServerSource],
) -> None:
    _mode, server, api, source = installed
    old = (datetime.now(UTC) - timedelta(days=5 * 365)).isoformat()
    ahead = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    now = datetime.now(UTC).isoformat()
    body = {
        "source": {"id": source.id},
        "session": {"id": f"live-{uuid.uuid4().hex[:8]}"},
        "events": [
            {"type": "view", "time": old},
            {"type": "view", "time": ahead},
            {"type": "view", "time": now},
        ],
    }
    answer = httpx.post(f"{server.base_url}/track", json=body, headers=source.headers)
    assert answer.status_code == 200, answer.text
    warnings = answer.json()["warnings"]
    assert any(w.startswith("events[0].time:") and "too far before" in w for w in warnings)
    assert any(w.startswith("events[1].time:") and "too far after" in w for w in warnings)
    assert not any(w.startswith("events[2].time") for w in warnings)
    stored = [_get(api, f"/event/{event_id}") for event_id in answer.json()["events"]]
    assert [_moment(e["time"]) for e in stored] == [_moment(old), _moment(ahead), _moment(now)]
