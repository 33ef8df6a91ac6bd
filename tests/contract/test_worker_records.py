"""The DeadLetterStore and WorkerBeats contracts, run against every configuration backend.

Built like the outbox suite: an opener per backend takes a place and yields the real stores with
the schema installed through that backend's SchemaStore (on MariaDB: the Alembic migrations);
opening the same place twice gives two independent stores over the same data, as two processes
would have. Times are passed in, never waited for.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tessera.storage.config_database import config_schema_store
from tessera.storage.ports import SchemaStore
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.stores import SqlSchemaStore
from tessera.storage.sql.worker_records import SqlDeadLetterStore, SqlWorkerBeats
from tessera.storage.worker_ports import DeadLetter, DeadLetterStore, WorkerBeat, WorkerBeats
from tests.support.mariadb import mariadb_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TENANT = "acme"


@dataclass
class WorkerRecordsBackend:
    name: str
    letters: DeadLetterStore
    beats: WorkerBeats
    schema: SchemaStore


WorkerRecordsOpener = Callable[[Path], AbstractAsyncContextManager[WorkerRecordsBackend]]


@asynccontextmanager
async def sqlite_worker_records(place: Path) -> AsyncIterator[WorkerRecordsBackend]:
    engine = sqlite_engine(place)
    try:
        yield WorkerRecordsBackend(
            "sqlite", SqlDeadLetterStore(engine), SqlWorkerBeats(engine), SqlSchemaStore(engine)
        )
    finally:
        await engine.dispose()


@asynccontextmanager
async def mariadb_worker_records(place: Path) -> AsyncIterator[WorkerRecordsBackend]:
    async with mariadb_database(place) as database:
        engine = database.engine
        yield WorkerRecordsBackend(
            "mariadb",
            SqlDeadLetterStore(engine),
            SqlWorkerBeats(engine),
            config_schema_store(engine, database.settings),
        )


WORKER_RECORD_BACKENDS: dict[str, WorkerRecordsOpener] = {
    "sqlite": sqlite_worker_records,
    "mariadb": mariadb_worker_records,
}


@pytest.fixture(params=list(WORKER_RECORD_BACKENDS))
def open_worker_records(request: pytest.FixtureRequest) -> WorkerRecordsOpener:
    return WORKER_RECORD_BACKENDS[request.param]


@pytest.fixture
async def backend(
    open_worker_records: WorkerRecordsOpener, tmp_path: Path
) -> AsyncIterator[WorkerRecordsBackend]:
    async with open_worker_records(tmp_path / "config") as opened:
        await opened.schema.create_schema()
        yield opened


@pytest.fixture
def letters(backend: WorkerRecordsBackend) -> DeadLetterStore:
    return backend.letters


@pytest.fixture
def beats(backend: WorkerRecordsBackend) -> WorkerBeats:
    return backend.beats


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def letter(
    letter_id: str,
    *,
    created: float = 0,
    tenant: str = TENANT,
    body: bytes | None = None,
) -> DeadLetter:
    return DeadLetter(
        id=letter_id,
        tenant=tenant,
        topic="tessera-ingest",
        partition=3,
        key=f"profile-{letter_id}",
        position=2**40 + 7,  # beyond 32 bits: positions of a long-lived log
        body=body if body is not None else f'{{"id": "{letter_id}"}}'.encode(),
        error="ValueError: the event has no type",
        attempts=5,
        created=at(created),
    )


def beat(
    worker_id: str,
    *,
    seen: float,
    tenant: str = TENANT,
    messages: int = 0,
    partitions: list[int] | None = None,
) -> WorkerBeat:
    return WorkerBeat(
        worker_id=worker_id,
        tenant=tenant,
        host="node-1",
        pid=4242,
        started=at(0),
        seen=at(seen),
        messages=messages,
        events=messages * 3,
        retries=2,
        dead_letters=1,
        rate=12.25,
        partitions=partitions if partitions is not None else [0, 1],
    )


# --- dead letters -------------------------------------------------------------------------------


async def test_a_dead_letter_is_kept_whole(letters: DeadLetterStore) -> None:
    kept = letter("d1", created=1.5)
    await letters.add(kept)

    stored = await letters.get(TENANT, "d1")

    assert stored is not None
    assert stored == kept
    assert stored.created.utcoffset() == timedelta(0)
    assert await letters.get(TENANT, "missing") is None


async def test_tenants_do_not_see_each_others_dead_letters(letters: DeadLetterStore) -> None:
    await letters.add(letter("same-id", body=b"mine"))
    await letters.add(letter("same-id", tenant="other", body=b"theirs"))
    await letters.add(letter("only-other", tenant="other"))

    mine = await letters.get(TENANT, "same-id")
    theirs = await letters.get("other", "same-id")

    assert mine is not None and mine.body == b"mine"
    assert theirs is not None and theirs.body == b"theirs"
    assert await letters.get(TENANT, "only-other") is None
    assert (await letters.count(TENANT), await letters.count("other")) == (1, 2)
    assert await letters.list("nobody") == ([], 0)
    assert not await letters.delete(TENANT, "only-other")
    assert await letters.count("other") == 2


async def test_dead_letters_list_newest_first_with_the_tenants_total(
    letters: DeadLetterStore,
) -> None:
    for index in range(6):
        await letters.add(letter(f"d{index}", created=index))
    await letters.add(letter("elsewhere", created=100, tenant="other"))

    everything, total = await letters.list(TENANT)
    page, paged_total = await letters.list(TENANT, limit=2, offset=1)
    past_the_end, _ = await letters.list(TENANT, limit=10, offset=6)

    assert total == paged_total == 6
    assert [item.id for item in everything] == ["d5", "d4", "d3", "d2", "d1", "d0"]
    assert [item.id for item in page] == ["d4", "d3"]
    assert past_the_end == []


async def test_deleting_a_dead_letter_removes_it_once(letters: DeadLetterStore) -> None:
    await letters.add(letter("d1", created=1))
    await letters.add(letter("d2", created=2))

    assert await letters.delete(TENANT, "d1")
    assert not await letters.delete(TENANT, "d1")
    assert await letters.get(TENANT, "d1") is None
    assert await letters.count(TENANT) == 1
    assert [item.id for item in (await letters.list(TENANT))[0]] == ["d2"]


async def test_a_large_binary_body_round_trips_byte_for_byte(letters: DeadLetterStore) -> None:
    # Every byte value, then random bytes: nothing may be decoded, trimmed or re-encoded.
    body = bytes(range(256)) * 16 + os.urandom(2 * 1024 * 1024)
    await letters.add(letter("big", body=body))

    stored = await letters.get(TENANT, "big")
    [listed], _ = await letters.list(TENANT)

    assert stored is not None
    assert len(stored.body) == len(body)
    assert stored.body == body
    assert listed.body == body


# --- worker beats -------------------------------------------------------------------------------


async def test_a_second_beat_replaces_the_workers_row(beats: WorkerBeats) -> None:
    await beats.beat(beat("w1", seen=10, messages=5, partitions=[0, 1]))
    latest = beat("w1", seen=20, messages=9, partitions=[2])
    await beats.beat(latest)

    assert await beats.live(TENANT, at(0)) == [latest]


async def test_live_workers_are_those_seen_since_by_worker_id(beats: WorkerBeats) -> None:
    await beats.beat(beat("w-b", seen=30))
    await beats.beat(beat("w-a", seen=20))
    await beats.beat(beat("w-old", seen=5))
    await beats.beat(beat("w-elsewhere", seen=30, tenant="other"))

    live = await beats.live(TENANT, at(20))

    assert [worker.worker_id for worker in live] == ["w-a", "w-b"]  # seen at ``since`` counts
    assert live[0] == beat("w-a", seen=20)
    assert live[0].seen.utcoffset() == timedelta(0)
    assert [worker.worker_id for worker in await beats.live(TENANT, at(0))] == [
        "w-a",
        "w-b",
        "w-old",
    ]
    assert await beats.live(TENANT, at(31)) == []
    assert [worker.worker_id for worker in await beats.live("other", at(0))] == ["w-elsewhere"]


async def test_a_forgotten_worker_is_gone_for_its_tenant_only(beats: WorkerBeats) -> None:
    await beats.beat(beat("w1", seen=10))
    await beats.beat(beat("w2", seen=10))
    await beats.beat(beat("w1", seen=10, tenant="other"))

    await beats.forget(TENANT, "w1")
    await beats.forget(TENANT, "never-seen")

    assert [worker.worker_id for worker in await beats.live(TENANT, at(0))] == ["w2"]
    assert [worker.worker_id for worker in await beats.live("other", at(0))] == ["w1"]


async def test_purge_drops_workers_last_seen_before_the_time_in_every_tenant(
    beats: WorkerBeats,
) -> None:
    await beats.beat(beat("gone", seen=5))
    await beats.beat(beat("gone-too", seen=9, tenant="other"))
    await beats.beat(beat("boundary", seen=10))
    await beats.beat(beat("recent", seen=50, tenant="other"))

    assert await beats.purge(at(10)) == 2
    assert await beats.purge(at(10)) == 0

    assert [worker.worker_id for worker in await beats.live(TENANT, at(0))] == ["boundary"]
    assert [worker.worker_id for worker in await beats.live("other", at(0))] == ["recent"]


async def test_two_processes_beating_for_a_new_worker_at_once_leave_one_row(
    open_worker_records: WorkerRecordsOpener, tmp_path: Path
) -> None:
    place = tmp_path / "shared"
    async with open_worker_records(place) as one, open_worker_records(place) as two:
        await one.schema.create_schema()
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    store.beat(beat(f"w{index}", seen=seen))
                    for index in range(5)
                    for seen, store in ((10, one.beats), (11, two.beats))
                )
            ),
            timeout=60,
        )

        live = await two.beats.live(TENANT, at(0))

    assert [worker.worker_id for worker in live] == [f"w{index}" for index in range(5)]
    assert {worker.seen for worker in live} <= {at(10), at(11)}
