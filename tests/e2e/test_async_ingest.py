"""Async intake, black box: what the answer promises is what the worker stores, a client's
retry stores nothing twice (sync and async), an unreachable queue gets 503 + Retry-After,
poison messages become dead letters that can be listed, replayed and dropped (API and CLI),
and `tessera install` applies the queue retention."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tessera.model.common import utcnow
from tessera.queue.embedded.queue import SqliteIngestQueue
from tessera.queue.ports import QueueMessage
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.worker_records import SqlDeadLetterStore
from tessera.storage.worker_ports import DeadLetter
from tests.support.cli import run_tessera
from tests.support.queues import QueueFactory
from tests.support.server import RunningServer, free_port, running_server
from tests.support.sources import keyed, make_server_source

ASYNC = {"TESSERA_INGEST_MODE": "async", "TESSERA_WORKERS": "1"}


def _eventually(check: Any, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.fixture(scope="module")
def async_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("async") / "data", ASYNC) as server:
        yield server


@pytest.fixture(scope="module")
def admin(async_server: RunningServer) -> httpx.Client:
    client = async_server.client(async_server.token())
    assert client.post("/event-source", json={"id": "web", "name": "Web"}).is_success
    return client


def _track(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/track", json={"source": {"id": "web"}, **body})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_the_ids_in_the_answer_are_the_ids_stored(admin: httpx.Client) -> None:
    answer = _track(admin, {"events": [{"type": "page-view"}, {"type": "page-view"}]})
    profile_id, session_id = answer["profile"]["id"], answer["session"]["id"]
    assert len(answer["events"]) == 2

    def stored() -> dict[str, Any] | None:
        found = admin.get(f"/profile/{profile_id}")
        return found.json() if found.status_code == 200 else None

    profile = _eventually(stored)
    assert profile is not None, "the worker did not store the promised profile"
    assert profile["stats"]["events"] == 2
    session = admin.get(f"/session/{session_id}").json()
    assert session["profile"]["id"] == profile_id
    for event_id in answer["events"]:
        event = admin.get(f"/event/{event_id}").json()
        assert event["profile"]["id"] == profile_id and event["session"]["id"] == session_id
    # The session is known now: a request naming only it gets the same profile.
    again = _track(admin, {"session": {"id": session_id}, "events": [{"type": "page-view"}]})
    assert again["profile"]["id"] == profile_id


@pytest.fixture(scope="module")
def sync_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("sync") / "data") as server:
        yield server


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_client_retry_stores_one_event_and_counts_it_once(
    mode: str, request: pytest.FixtureRequest
) -> None:
    server: RunningServer = request.getfixturevalue(f"{mode}_server")
    client = server.client(server.token())
    # The operator's own system: its event and profile ids are kept as it sends them.
    source = make_server_source(client, "Backend")
    sender = keyed(server.client(), source)
    profile_id = f"retry-{mode}-{time.monotonic_ns()}"
    body = {
        "source": {"id": source.id},
        "profile": {"id": profile_id},
        "session": {"id": f"{profile_id}-s"},
        "events": [{"id": f"{profile_id}-e1", "type": "purchase"}],
    }
    first = sender.post("/track", json=body)
    second = sender.post("/track", json=body)
    # And two more at the same moment, as a flaky network's duplicates would arrive.
    with ThreadPoolExecutor(2) as pool:
        more = list(pool.map(lambda _n: sender.post("/track", json=body).status_code, range(2)))
    assert first.status_code == second.status_code == 200 and more == [200, 200]

    def settled() -> dict[str, Any] | None:
        found = client.get(f"/profile/{profile_id}")
        return found.json() if found.status_code == 200 else None

    profile = _eventually(settled)
    assert profile is not None
    time.sleep(1.0)  # duplicates still in the queue would land by now
    events = client.get(f"/profile/{profile_id}/events").json()
    assert client.get(f"/profile/{profile_id}").json()["stats"]["events"] == 1
    assert [event["id"] for event in events["result"]] == [f"{profile_id}-e1"], events


def test_an_unreachable_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = {
        **ASYNC,
        "TESSERA_QUEUE": "kafka",
        "KAFKA_BOOTSTRAP_SERVERS": dead,
        "TESSERA_QUEUE_PUBLISH_TIMEOUT_SECONDS": "1",
    }
    with running_server(tmp_path / "data", env) as server:
        client = server.client(server.token())
        assert client.post("/event-source", json={"id": "web", "name": "Web"}).is_success
        for _ in range(2):
            answer = client.post(
                "/track", json={"source": {"id": "web"}, "events": [{"type": "page-view"}]}
            )
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1
            assert "queue" in answer.json()["detail"]
        collected = client.get("/collect/page-view/web/s-1")
        assert collected.status_code == 503 and collected.headers["retry-after"]
        assert client.get("/health").status_code == 200
        assert client.get("/queue/status").status_code == 503


def _dead_letters(client: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/queue/dead-letters").json()
    return result


def test_poison_messages_become_dead_letters_that_can_be_replayed_and_dropped(
    admin: httpx.Client, async_server: RunningServer
) -> None:
    async def publish_poison() -> None:
        queue = SqliteIngestQueue(async_server.data_dir / "queue.db")
        await queue.start()
        try:
            await queue.publish([QueueMessage("poison-key", b"\x93not a batch")])
        finally:
            await queue.close()

    asyncio.run(publish_poison())
    listed = _eventually(lambda: _dead_letters(admin)["total"] >= 1 and _dead_letters(admin))
    assert listed, "the poison message never became a dead letter"
    letter = next(item for item in listed["result"] if item["key"] == "poison-key")
    assert "not a queued batch" in letter["error"] and letter["events"] is None
    detail = admin.get(f"/queue/dead-letters/{letter['id']}").json()
    assert base64.b64decode(detail["body_base64"]) == b"\x93not a batch"
    assert admin.get("/queue/status").json()["dead_letters"] >= 1

    # Replayed, it is published again — and being poison, comes back as a new dead letter.
    replayed = admin.post(f"/queue/dead-letters/{letter['id']}/replay")
    assert replayed.status_code == 200 and replayed.json()["replayed"] == "published"
    assert admin.get(f"/queue/dead-letters/{letter['id']}").status_code == 404
    back = _eventually(
        lambda: [i for i in _dead_letters(admin)["result"] if i["key"] == "poison-key"]
    )
    assert back and back[0]["id"] != letter["id"]
    assert admin.delete(f"/queue/dead-letters/{back[0]['id']}").status_code == 204
    assert admin.delete(f"/queue/dead-letters/{back[0]['id']}").status_code == 404
    assert admin.post("/queue/dead-letters/nope/replay").status_code == 404


def test_a_dead_letter_whose_cause_is_gone_is_processed_when_replayed(
    admin: httpx.Client, async_server: RunningServer
) -> None:
    # A message that failed earlier (say, a bug since fixed): a real queued batch.
    accepted = _track(admin, {"events": [{"type": "page-view", "id": "late-event"}]})
    [late_event] = accepted["events"]
    stored = _eventually(lambda: admin.get(f"/event/{late_event}").status_code == 200)
    assert stored
    body = _queued_body_for_new_event(admin)
    letter_id = asyncio.run(_add_dead_letter(async_server.data_dir, body))
    answer = admin.post(f"/queue/dead-letters/{letter_id}/replay")
    assert answer.status_code == 200, answer.text
    assert _eventually(lambda: admin.get("/event/replayed-event").status_code == 200)
    assert accepted["profile"]["id"]


def _queued_body_for_new_event(admin: httpx.Client) -> bytes:
    from tessera.model.source import EventSource
    from tessera.pipeline.request import IncomingBatch, IncomingEvent
    from tessera.workers.codec import encode_batch

    source = admin.get("/event-source/web").json()
    batch = IncomingBatch(
        tenant="default",
        source=EventSource(id="web", tenant="default", name=source["name"], created=utcnow()),
        events=[IncomingEvent(type="page-view", id="replayed-event", time=utcnow())],
        session_id="replayed-session",
        new_profile_id="replayed-profile",
    )
    return encode_batch(batch)


async def _add_dead_letter(data_dir: Path, body: bytes) -> str:
    engine = sqlite_engine(data_dir)
    try:
        letter = DeadLetter(
            id="letter-1",
            tenant="default",
            topic="tessera-ingest",
            partition=0,
            key="replayed-session",
            position=1,
            body=body,
            error="RuntimeError: a bug since fixed",
            attempts=5,
            created=utcnow(),
        )
        await SqlDeadLetterStore(engine).add(letter)
    finally:
        await engine.dispose()
    return letter.id


def test_the_cli_shows_the_queue_and_its_dead_letters(async_server: RunningServer) -> None:
    env = {**ASYNC, "TESSERA_DATA_DIR": str(async_server.data_dir)}
    status = run_tessera(env, "queue", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"backend": "embedded"' in status.stdout and '"backlog"' in status.stdout
    listed = run_tessera(env, "queue", "dead-letters", "list")
    assert listed.returncode == 0 and "dead letter(s)" in listed.stderr, listed.stderr
    missing = run_tessera(env, "queue", "dead-letters", "replay", "no-such-letter")
    assert missing.returncode == 1 and "not found" in missing.stderr
    both = run_tessera(env, "queue", "dead-letters", "replay")
    assert both.returncode == 2 and "--all" in both.stderr


def test_install_applies_the_queue_retention(queue_factory: QueueFactory, tmp_path: Path) -> None:
    env = {
        **queue_factory.environment(),
        "TESSERA_INGEST_MODE": "async",
        "TESSERA_DATA_DIR": str(tmp_path / "data"),
        "TESSERA_QUEUE_RETENTION_HOURS": "48",
        "TESSERA_QUEUE_RETENTION_MB": "256",
    }
    done = run_tessera(env, "install")
    assert done.returncode == 0, done.stderr
    applied = {
        "embedded": "keeps acknowledged messages 48 h / 256 MB",
        "redis": "older than 48 h are trimmed",
        "kafka": "delete processed records older than 48 h or beyond 32.0 MB per partition",
        "pulsar": "acknowledged messages kept 48 h / 256 MB",
    }[queue_factory.backend]
    assert "Queue retention:" in done.stderr
    assert applied in done.stderr, done.stderr
