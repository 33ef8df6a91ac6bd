"""Redis round trips per `/track` request in the distributed mode, counted black box.

A returning visitor's request takes its session's and profile's locks and reads both from the
shared cache in one round trip, checks the locks and makes the cache entries misses before the
commit in a second, and puts the new versions back and lets go of the locks in a third (it
used to make eleven). Counted with Redis MONITOR (tests/support/redis_monitor.py): the
commands that name the installation's keys and that no script ran, an upper bound of its
round trips. Only the distributed mode is measured: the embedded one has no Redis to talk to.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.modes import server_in_mode
from tests.support.redis_monitor import RedisCommandCounter, counting_commands
from tests.support.server import RunningServer
from tests.support.sources import ServerSource, make_server_source

REQUESTS = 12
# The goal of issue 13: acquire + read, check + invalidate, write back + release.
RETURNING_AT_MOST = 3
# A new visitor's profile id is made under the session's lock, so its lock is one more.
NEW_AT_MOST = 4
WEB_SOURCE = "trips-web"


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("trips") / "data"
    with server_in_mode("distributed-sync", data_dir) as server:
        yield server


@pytest.fixture(scope="module")
def counter(installation: RunningServer) -> Iterator[RedisCommandCounter]:
    with counting_commands(installation.env["TESSERA_REDIS_PREFIX"]) as counting:
        yield counting


@pytest.fixture(scope="module")
def server_source(installation: RunningServer) -> ServerSource:
    api = installation.client(installation.token())
    answer = api.post("/event-source", json={"id": WEB_SOURCE, "name": "Round trips web"})
    assert answer.status_code in (200, 201), answer.text
    return make_server_source(api, "Round trips backend", id="trips-backend")


def _track(client: httpx.Client, source: str, **payload: Any) -> dict[str, Any]:
    body = {"source": {"id": source}, "events": [{"type": "page-view"}], **payload}
    answer = client.post("/track", json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _per_request(counter: RedisCommandCounter, send: list[dict[str, Any]], post: Any) -> float:
    with counter.window() as window:
        for body in send:
            post(body)
    return len(window.commands) / len(send)


def _returning(client: httpx.Client, source: str) -> list[dict[str, Any]]:
    """One request each of ``REQUESTS`` visitors who were here before: they send the ids
    they were answered, as the tracker does."""
    bodies = []
    for _visitor in range(REQUESTS):
        first = _track(client, source)
        bodies.append({"session": first["session"], "profile": first["profile"]})
    return bodies


@pytest.mark.parametrize("sender", ["website", "server source"])
def test_a_returning_visitors_request_makes_three_round_trips(
    installation: RunningServer,
    counter: RedisCommandCounter,
    server_source: ServerSource,
    sender: str,
) -> None:
    client = installation.client()
    source = WEB_SOURCE
    if sender == "server source":
        client.headers.update(server_source.headers)
        source = server_source.id
    bodies = _returning(client, source)
    trips = _per_request(counter, bodies, lambda body: _track(client, source, **body))
    print(f"\nRedis round trips per returning visitor's request ({sender}): {trips:.2f}")
    assert trips <= RETURNING_AT_MOST


def test_a_new_visitors_request_makes_four_round_trips(
    installation: RunningServer, counter: RedisCommandCounter, server_source: ServerSource
) -> None:
    client = installation.client()
    bodies: list[dict[str, Any]] = [
        {"session": {"id": str(uuid.uuid4())}} for _visitor in range(REQUESTS)
    ]
    trips = _per_request(counter, bodies, lambda body: _track(client, WEB_SOURCE, **body))
    print(f"\nRedis round trips per new visitor's request: {trips:.2f}")
    assert trips <= NEW_AT_MOST
