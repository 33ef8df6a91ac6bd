"""The distributed mode, black box, where Elasticsearch cannot read everything or is new:

- a fresh installation has its current partitions before the first request, and answers its
  first 600 concurrent `/track` requests without a single 503;
- with a profile's partition closed, `/track` of that profile and a profile search answer 503
  with Retry-After (never 200 with a new, empty profile); once the partition is open again
  the profile is as it was and the next `/track` continues its counters;
- `GET /profile/{id}/export` works in distributed mode.

Each test runs `tessera serve` on its own installation (tests/support/distributed.py).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from elasticsearch import Elasticsearch

from tessera.model.common import DEFAULT_TENANT
from tessera.model.profile import Profile, ProfileMetadata, ProfileTime
from tessera.storage.elastic.backend import ElasticRecordBackend
from tessera.storage.elastic.client import ElasticConnection
from tessera.storage.elastic.naming import KINDS, Names, partition
from tessera.storage.elastic.schema import IndexShape
from tessera.storage.ports import ChangeSet
from tests.support.distributed import Installation, distributed_installation
from tests.support.elastic import URL as ELASTIC_URL
from tests.support.server import RunningServer, start_server

FIRST_REQUESTS = 600
# Requests in flight at once. Not all 600: Redis' client pool (100 connections, redis-py's
# default) runs out first and answers 500 "Too many connections" (a Redis-side limit).
IN_FLIGHT = 64
LAST_YEAR = datetime(2025, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def installation() -> Iterator[Installation]:
    with distributed_installation("reads") as made:
        yield made


@pytest.fixture
def elastic() -> Iterator[Elasticsearch]:
    client = Elasticsearch(ELASTIC_URL, request_timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def server(installation: Installation, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path / "data", installation.env)
    try:
        yield running
    finally:
        running.stop()


def _source(server: RunningServer) -> str:
    admin = server.client(server.token())
    created = admin.post("/event-source", json={"id": "web", "name": "Web"})
    assert created.status_code in (200, 201), created.text
    return "web"


def _track_body(source: str, session: str, profile: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": {"id": source},
        "session": {"id": session},
        "events": [{"type": "page-view"}],
    }
    if profile is not None:
        body["profile"] = {"id": profile}
    return body


# --- A fresh installation --------------------------------------------------------------------


def test_a_fresh_installation_answers_its_first_requests_without_503(
    installation: Installation, server: RunningServer, elastic: Elasticsearch
) -> None:
    names = Names(installation.prefix)
    now = datetime.now(UTC)
    # Before any request: the partitions of now exist, behind their aliases.
    indices = set(elastic.indices.get(index=names.tenant_indices(DEFAULT_TENANT)).body)
    assert {
        names.partition_index(DEFAULT_TENANT, "event", partition(now, "month")),
        names.partition_index(DEFAULT_TENANT, "session", partition(now, "quarter")),
        names.partition_index(DEFAULT_TENANT, "profile", partition(now, "year")),
        names.single_index(DEFAULT_TENANT, "identity"),
        names.single_index(DEFAULT_TENANT, "retired"),
    } <= indices
    source = _source(server)

    async def send_all() -> collections.Counter[int]:
        statuses: collections.Counter[int] = collections.Counter()
        limits = httpx.Limits(max_connections=IN_FLIGHT)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as web:

            async def one(n: int) -> None:
                answer = await web.post("/track", json=_track_body(source, f"first-{n}"))
                statuses[answer.status_code] += 1

            await asyncio.gather(*(one(n) for n in range(FIRST_REQUESTS)))
        return statuses

    statuses = asyncio.run(send_all())
    print(f"first {FIRST_REQUESTS} requests ({IN_FLIGHT} in flight): {dict(statuses)}")
    assert statuses[503] == 0
    assert statuses == {200: FIRST_REQUESTS}


# --- A closed partition ----------------------------------------------------------------------


def _store_last_years_profile(prefix: str) -> Profile:
    """A profile first seen last year, written as any earlier Tessera would have: it lives in
    last year's profile partition."""
    profile = Profile(
        id="p-last-year",
        tenant=DEFAULT_TENANT,
        metadata=ProfileMetadata(time=ProfileTime(insert=LAST_YEAR, update=LAST_YEAR)),
        ids=["p-last-year"],
        traits={"name": "Ada"},
    )
    profile.stats["events"] = 5
    profile.stats["visits"] = 2

    async def store() -> None:
        backend = ElasticRecordBackend(
            ElasticConnection(hosts=(ELASTIC_URL,)),
            prefix=prefix,
            shapes=dict.fromkeys(KINDS, IndexShape(1, 0)),
            partitioning={"event": "month", "session": "quarter", "profile": "year"},
            batch_size=10,
        )
        await backend.start()
        try:
            await backend.writer.commit(ChangeSet(profiles=[profile]))
        finally:
            await backend.close()

    asyncio.run(store())
    return profile


def _copies(elastic: Elasticsearch, names: Names, profile_id: str) -> list[str]:
    answer = elastic.search(
        index=names.alias(DEFAULT_TENANT, "profile"), query={"ids": {"values": [profile_id]}}
    )
    return sorted(hit["_index"] for hit in answer["hits"]["hits"])


def _assert_retry_later(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) > 0


def test_track_over_a_closed_partition_answers_503_and_the_profile_survives(
    installation: Installation, server: RunningServer, elastic: Elasticsearch
) -> None:
    names = Names(installation.prefix)
    stored = _store_last_years_profile(installation.prefix)
    home = names.partition_index(DEFAULT_TENANT, "profile", "2025")
    source = _source(server)
    admin = server.client(server.token())
    tracker = server.client()
    track = _track_body(source, "visit-1", stored.id)

    # Read from Elasticsearch (not cached yet): the profile cannot be read, so nothing is
    # decided about it: no new profile, no write.
    elastic.indices.close(index=home)
    try:
        _assert_retry_later(tracker.post("/track", json=track))
        _assert_retry_later(admin.post("/profiles/search", json={}))
        _assert_retry_later(admin.get(f"/profile/{stored.id}"))
    finally:
        elastic.indices.open(index=home, wait_for_active_shards="all")
    profile = admin.get(f"/profile/{stored.id}").json()
    assert profile["stats"]["events"] == 5 and profile["traits"] == {"name": "Ada"}
    assert _copies(elastic, names, stored.id) == [home]

    # Readable again: the counters go on from the stored values.
    answer = tracker.post("/track", json=track)
    assert answer.status_code == 200, answer.text
    assert answer.json()["profile"]["id"] == stored.id
    profile = admin.get(f"/profile/{stored.id}").json()
    assert (profile["stats"]["events"], profile["stats"]["visits"]) == (6, 3)

    # Now cached: the writer's own lookup of where the profile lives cannot read it either.
    elastic.indices.close(index=home)
    try:
        _assert_retry_later(tracker.post("/track", json=track))
    finally:
        elastic.indices.open(index=home, wait_for_active_shards="all")
    answer = tracker.post("/track", json=track)
    assert answer.status_code == 200, answer.text
    profile = admin.get(f"/profile/{stored.id}").json()
    assert (profile["stats"]["events"], profile["stats"]["visits"]) == (7, 3)
    assert profile["traits"] == {"name": "Ada"}
    assert _copies(elastic, names, stored.id) == [home]


# --- Export ----------------------------------------------------------------------------------


def test_export_works_in_distributed_mode(server: RunningServer) -> None:
    source = _source(server)
    tracker = server.client()
    first = tracker.post("/track", json=_track_body(source, "export-1"))
    assert first.status_code == 200, first.text
    profile_id = first.json()["profile"]["id"]
    for session in ("export-1", "export-2", "export-2"):
        answer = tracker.post("/track", json=_track_body(source, session, profile_id))
        assert answer.status_code == 200, answer.text

    exported = server.client(server.token()).get(f"/profile/{profile_id}/export")

    assert exported.status_code == 200, exported.text
    body = exported.json()
    assert body["profile"]["id"] == profile_id
    assert len(body["events"]) == 4
    assert sorted(session["id"] for session in body["sessions"]) == ["export-1", "export-2"]
