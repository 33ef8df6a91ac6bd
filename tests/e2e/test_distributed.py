"""The distributed mode, black box: two `tessera serve` processes side by side on the same
Elasticsearch (records), MariaDB (configuration) and Redis (locks, caches, tokens) behave as
one system — counters stay exact and merges leave one profile when both take the same person's
traffic at once. Also: a clear refusal to start when Elasticsearch is down, and recovery of a
running server when it comes back.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import mariadb
from tests.support.distributed import NO_REFRESH_ENV, clean_distributed, distributed_env
from tests.support.elastic import URL as ELASTIC_URL
from tests.support.elastic import require_elastic
from tests.support.redis_service import REDIS_HOST, REDIS_PORT, new_client
from tests.support.server import RunningServer, free_port, start_server
from tests.support.services import service_missing
from tests.support.sources import keyed, make_server_source
from tests.support.tcp_proxy import TcpRelay

PASSWORD = "side-by-side-password-42"


def _redis_or_skip() -> None:
    async def ping() -> None:
        client = new_client()
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except Exception as error:  # noqa: BLE001 - any failure to reach it is a reason to skip
        service_missing(
            f"REDIS NOT AVAILABLE at {REDIS_HOST}:{REDIS_PORT} ({error!r}); scripts/services up"
        )


def _mariadb_or_skip() -> None:
    asyncio.run(mariadb.require_mariadb())


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, RunningServer]]:
    require_elastic()
    _mariadb_or_skip()
    _redis_or_skip()
    prefix = f"tt-pair-{uuid.uuid4().hex[:10]}"
    database = f"{mariadb.PREFIX}pair_{uuid.uuid4().hex[:12]}"
    asyncio.run(mariadb.create_database(database))
    # The production default: bulks do not refresh; what both processes decide on is read
    # by id (realtime).
    env = {**distributed_env(prefix, database), **NO_REFRESH_ENV}
    root = tmp_path_factory.mktemp("pair")
    first = start_server(root / "a", env, admin_password=PASSWORD)
    second = start_server(root / "b", env, admin_password=PASSWORD)
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()
        if not os.environ.get("TESSERA_KEEP_TEST_DATA"):
            clean_distributed(prefix, database)
        else:
            print(f"kept: prefix {prefix}, database {database}")


def _track(
    client: httpx.Client, source: str, session: str, *events: dict[str, Any]
) -> dict[str, Any]:
    answer = client.post(
        "/track",
        json={"source": {"id": source}, "session": {"id": session}, "events": list(events)},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_configuration_and_tokens_are_shared(pair: tuple[RunningServer, RunningServer]) -> None:
    first, second = pair
    token = first.token()
    # A token issued by one process is good at the other (tokens live in Redis).
    on_second = second.client(token)
    created = on_second.post("/event-source", json={"id": "shared-web", "name": "Web"})
    assert created.status_code in (200, 201), created.text
    # The source made through the second process is in the shared configuration database.
    assert first.client(token).get("/event-source/shared-web").status_code == 200


def test_counters_stay_exact_when_both_processes_take_one_visitor(
    pair: tuple[RunningServer, RunningServer],
) -> None:
    first, second = pair
    token = first.token()
    first.client(token).post("/event-source", json={"id": "counted", "name": "Counted"})
    session = f"visit-{uuid.uuid4().hex[:8]}"
    opening = _track(first.client(), "counted", session, {"type": "page-view"})
    clients = [first.client(), second.client()]
    sent = 120

    def send(index: int) -> None:
        _track(clients[index % 2], "counted", session, {"type": "page-view"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(sent)))
    profile = first.client(token).get(f"/profile/{opening['profile']['id']}").json()
    session_doc = second.client(token).get(f"/session/{session}").json()
    print(
        f"sent {sent + 1} events through two processes; profile counts {profile['stats']['events']}"
    )
    assert profile["stats"]["events"] == sent + 1
    assert session_doc["events"] == sent + 1
    assert profile["stats"]["visits"] == 1


def test_one_person_seen_by_both_processes_at_once_ends_as_one_profile(
    pair: tuple[RunningServer, RunningServer],
) -> None:
    first, second = pair
    token = first.token()
    # The shop's own system identifies the person (a server source: its identify merges).
    source = make_server_source(first.client(token), "Merging", id="merging")
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    sessions = [f"device-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    clients = [keyed(first.client(), source), keyed(second.client(), source)]
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def identify(index: int) -> None:
        answer = _track(
            clients[index % 2],
            "merging",
            sessions[index],
            {"type": "identify", "properties": {"email": email}},
        )
        with lock:
            answers.append(answer)

    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(identify, range(len(sessions))))
    ids = {answer["profile"]["id"] for answer in answers}
    survivors = {first.client(token).get(f"/profile/{i}").json()["id"] for i in ids}
    print(f"{len(sessions)} devices, two processes: {len(ids)} ids, {len(survivors)} survivor(s)")
    assert len(survivors) == 1
    [survivor_id] = survivors
    survivor = second.client(token).get(f"/profile/{survivor_id}").json()
    assert ids <= set(survivor["ids"])
    assert survivor["stats"]["visits"] == len(sessions)
    first.make_searchable()  # searches follow the refresh interval
    found = (
        first.client(token)
        .post("/profiles/search", json={"where": f'profile@data.contact.email.main == "{email}"'})
        .json()
    )
    assert found["total"] == 1, [(p["id"], p["ids"]) for p in found["result"]]


def test_start_up_is_refused_clearly_when_elasticsearch_is_down(tmp_path: Path) -> None:
    _mariadb_or_skip()
    _redis_or_skip()
    closed = f"http://127.0.0.1:{free_port()}"
    database = f"{mariadb.PREFIX}down_{uuid.uuid4().hex[:12]}"
    asyncio.run(mariadb.create_database(database))
    env = distributed_env("tt-down", database, elastic_url=closed)
    try:
        with pytest.raises(RuntimeError) as refused:
            start_server(tmp_path / "data", env, admin_password=PASSWORD)
    finally:
        asyncio.run(mariadb.drop_databases({database}))
    log = str(refused.value)
    assert "Cannot start" in log
    assert f"ELASTIC_HOST={closed}" in log
    assert "Traceback" not in log


class _Relay:
    """The TCP relay on its own event loop in a thread: the server under test is another
    process, and the test itself is synchronous."""

    def __init__(self) -> None:
        host, port = ELASTIC_URL.removeprefix("http://").split(":")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.relay = TcpRelay(host, int(port))

    def run(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=30)

    def close(self) -> None:
        self.run(self.relay.down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def test_a_running_server_recovers_when_elasticsearch_comes_back(tmp_path: Path) -> None:
    require_elastic()
    _mariadb_or_skip()
    _redis_or_skip()
    relay = _Relay()
    relay.run(relay.relay.up())
    prefix = f"tt-back-{uuid.uuid4().hex[:10]}"
    database = f"{mariadb.PREFIX}back_{uuid.uuid4().hex[:12]}"
    asyncio.run(mariadb.create_database(database))
    server = start_server(
        tmp_path / "data",
        distributed_env(prefix, database, relay.relay.url),
        admin_password=PASSWORD,
    )
    try:
        admin = server.client(server.token())
        admin.post("/event-source", json={"id": "web", "name": "Web"})
        tracker = server.client()
        _track(tracker, "web", "before", {"type": "page-view"})
        relay.run(relay.relay.down())
        while_down = tracker.post(
            "/track",
            json={
                "source": {"id": "web"},
                "session": {"id": "during"},
                "events": [{"type": "page-view"}],
            },
        )
        assert while_down.status_code == 503, while_down.text
        relay.run(relay.relay.up())
        after = _track(tracker, "web", "after", {"type": "page-view"})
        assert admin.get(f"/event/{after['events'][0]}").status_code == 200
    finally:
        server.stop()
        relay.close()
        clean_distributed(prefix, database)
