"""The OutboxStore contract, run against every backend that implements it.

Built like the processing-rule suite: an opener per backend takes a place and yields the real
store with its schema installed through the backend's SchemaStore; opening the same place twice
gives two independent stores over the same data, as two processes would have. Adding a backend
means adding an opener to ``OUTBOX_BACKENDS``. Times are passed in, never waited for: a lease
"runs out" because the test asks with a later ``now``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tessera.model.destination import DeliveryAttempt, DeliveryOutcome, OutboxMessage
from tessera.storage.automation_ports import OutboxStore
from tessera.storage.config_database import config_schema_store
from tessera.storage.ports import SchemaStore
from tessera.storage.sql.destinations import SqlOutboxStore
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.stores import SqlSchemaStore
from tests.support.mariadb import mariadb_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TENANT = "acme"


@dataclass
class OutboxBackend:
    name: str
    outbox: OutboxStore
    schema: SchemaStore


OutboxOpener = Callable[[Path], AbstractAsyncContextManager[OutboxBackend]]


@asynccontextmanager
async def sqlite_outbox(place: Path) -> AsyncIterator[OutboxBackend]:
    engine = sqlite_engine(place)
    try:
        yield OutboxBackend("sqlite", SqlOutboxStore(engine), SqlSchemaStore(engine))
    finally:
        await engine.dispose()


@asynccontextmanager
async def mariadb_outbox(place: Path) -> AsyncIterator[OutboxBackend]:
    async with mariadb_database(place) as database:
        engine = database.engine
        yield OutboxBackend(
            "mariadb", SqlOutboxStore(engine), config_schema_store(engine, database.settings)
        )


OUTBOX_BACKENDS: dict[str, OutboxOpener] = {"sqlite": sqlite_outbox, "mariadb": mariadb_outbox}


@pytest.fixture(params=list(OUTBOX_BACKENDS))
def open_outbox(request: pytest.FixtureRequest) -> OutboxOpener:
    return OUTBOX_BACKENDS[request.param]


@pytest.fixture
async def outbox(open_outbox: OutboxOpener, tmp_path: Path) -> AsyncIterator[OutboxStore]:
    async with open_outbox(tmp_path / "config") as backend:
        await backend.schema.create_schema()
        yield backend.outbox


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def message(
    message_id: str,
    *,
    due: float = 0,
    tenant: str = TENANT,
    destination_id: str = "hook",
    created: float | None = None,
    body: Any = None,
) -> OutboxMessage:
    return OutboxMessage(
        tenant=tenant,
        id=message_id,
        destination_id=destination_id,
        created=at(created if created is not None else due),
        due=at(due),
        body=body if body is not None else {"n": message_id},
        event_id=f"event-{message_id}",
        profile_id="p-1",
    )


def attempt(claimed: OutboxMessage, when: float, status: int | None = 500) -> DeliveryAttempt:
    return DeliveryAttempt(
        tenant=claimed.tenant,
        message_id=claimed.id,
        number=claimed.attempts + 1,
        time=at(when),
        status=status,
        error=None if status == 200 else "HTTP 500",
        duration_ms=12.5,
    )


async def test_messages_are_kept_whole(outbox: OutboxStore) -> None:
    body = {"event": {"id": "e", "tags": ["a", "b"], "n": 1.5, "ok": True, "none": None}}
    await outbox.add([message("m1", due=5, body=body)])
    stored = await outbox.get(TENANT, "m1")
    assert stored is not None
    assert stored.body == body
    assert (stored.due, stored.created) == (at(5), at(5))
    assert (stored.state, stored.attempts, stored.lease) == ("pending", 0, None)
    assert (stored.event_id, stored.profile_id, stored.destination_id) == (
        "event-m1",
        "p-1",
        "hook",
    )
    assert await outbox.get("other", "m1") is None
    assert await outbox.get(TENANT, "missing") is None
    await outbox.add([])  # nothing to add is fine


async def test_claim_takes_due_pending_messages_oldest_due_first_up_to_the_limit(
    outbox: OutboxStore,
) -> None:
    await outbox.add(
        [message("late", due=30), message("b", due=2), message("a", due=1), message("c", due=3)]
    )
    first = await outbox.claim_due(at(10), limit=2, lease_s=60)
    assert [m.id for m in first] == ["a", "b"]
    assert all(m.lease for m in first) and first[0].lease == first[1].lease
    assert all(m.due == at(70) for m in first)  # due again when the lease runs out
    second = await outbox.claim_due(at(10), limit=10, lease_s=60)
    assert [m.id for m in second] == ["c"]  # "late" is not due yet; a and b are leased
    assert second[0].lease != first[0].lease
    assert await outbox.claim_due(at(10), limit=10, lease_s=60) == []
    assert await outbox.claim_due(at(10), limit=0, lease_s=60) == []


async def test_a_lease_that_ran_out_is_due_again_and_the_old_holder_cannot_record(
    outbox: OutboxStore,
) -> None:
    await outbox.add([message("m", due=0)])
    [first] = await outbox.claim_due(at(1), limit=10, lease_s=30)
    assert await outbox.claim_due(at(30), limit=10, lease_s=30) == []  # still leased
    [second] = await outbox.claim_due(at(31), limit=10, lease_s=30)  # first holder died
    assert second.id == "m" and second.lease != first.lease

    # The first holder comes back late: its attempt is kept, its outcome is not applied.
    assert not await outbox.record_attempt(
        first, attempt(first, 40, status=200), DeliveryOutcome(state="delivered")
    )
    still = await outbox.get(TENANT, "m")
    assert still is not None and (still.state, still.attempts) == ("pending", 0)
    assert await outbox.record_attempt(
        second, attempt(second, 41, status=200), DeliveryOutcome(state="delivered")
    )
    done = await outbox.get(TENANT, "m")
    assert done is not None
    assert (done.state, done.attempts, done.last_status, done.lease) == ("delivered", 1, 200, None)
    assert [a.time for a in await outbox.attempts(TENANT, "m")] == [at(40), at(41)]
    assert await outbox.claim_due(at(1000), limit=10, lease_s=30) == []  # delivered: never again


async def test_two_stores_on_the_same_data_never_claim_the_same_message(
    open_outbox: OutboxOpener, tmp_path: Path
) -> None:
    place = tmp_path / "shared"
    async with open_outbox(place) as one, open_outbox(place) as two:
        await one.schema.create_schema()
        await one.outbox.add([message(f"m{index:03}", due=index / 100) for index in range(60)])
        claimed: list[str] = []
        # Under contention a claim may come back short (the other took those first); claiming
        # again takes the rest. What must never happen is one message claimed twice.
        for _round in range(30):
            claims = await asyncio.gather(
                *(
                    store.claim_due(at(10), limit=7, lease_s=60)
                    for _claim in range(3)
                    for store in (one.outbox, two.outbox)
                )
            )
            taken = [m.id for batch in claims for m in batch]
            claimed += taken
            if not taken:
                break
        assert len(claimed) == len(set(claimed)) == 60


async def test_a_retry_is_due_at_its_time_and_a_dead_message_is_a_dead_letter(
    outbox: OutboxStore,
) -> None:
    await outbox.add([message("m", due=0)])
    [claimed] = await outbox.claim_due(at(0), limit=1, lease_s=60)
    assert await outbox.record_attempt(
        claimed, attempt(claimed, 1), DeliveryOutcome(state="pending", due=at(20))
    )
    retried = await outbox.get(TENANT, "m")
    assert retried is not None
    assert (retried.state, retried.attempts, retried.due, retried.last_status) == (
        "pending",
        1,
        at(20),
        500,
    )
    assert retried.last_error == "HTTP 500"
    assert await outbox.claim_due(at(19), limit=1, lease_s=60) == []
    [again] = await outbox.claim_due(at(20), limit=1, lease_s=60)
    assert again.attempts == 1
    assert await outbox.record_attempt(again, attempt(again, 21), DeliveryOutcome(state="dead"))

    dead, total = await outbox.dead_letters(TENANT, limit=10)
    assert total == 1 and [(m.id, m.state, m.attempts) for m in dead] == [("m", "dead", 2)]
    assert await outbox.claim_due(at(10_000), limit=10, lease_s=60) == []
    assert [(a.number, a.status) for a in await outbox.attempts(TENANT, "m")] == [
        (1, 500),
        (2, 500),
    ]
    assert await outbox.dead_letters("other", limit=10) == ([], 0)


async def _kill(outbox: OutboxStore, now: float) -> None:
    for claimed in await outbox.claim_due(at(now), limit=100, lease_s=60):
        await outbox.record_attempt(claimed, attempt(claimed, now), DeliveryOutcome(state="dead"))


async def test_dead_letters_page_newest_first_with_a_total(outbox: OutboxStore) -> None:
    await outbox.add([message(f"m{index}", due=0, created=index) for index in range(5)])
    await outbox.add([message("other-tenant", due=0, tenant="other")])
    await _kill(outbox, 1)
    page, total = await outbox.dead_letters(TENANT, limit=2, offset=1)
    assert total == 5
    assert [m.id for m in page] == ["m3", "m2"]
    assert await outbox.counts(TENANT) == {"held": 0, "pending": 0, "delivered": 0, "dead": 5}


async def test_replay_makes_a_dead_message_pending_again_and_keeps_its_history(
    outbox: OutboxStore,
) -> None:
    await outbox.add([message("m", due=0), message("waiting", due=0)])
    [claimed] = await outbox.claim_due(at(0), limit=1, lease_s=60)
    await outbox.record_attempt(claimed, attempt(claimed, 1), DeliveryOutcome(state="dead"))

    replayed = await outbox.replay(TENANT, "m", at(50))
    assert replayed is not None
    assert (replayed.state, replayed.attempts, replayed.due, replayed.lease) == (
        "pending",
        0,
        at(50),
        None,
    )
    assert await outbox.replay(TENANT, "m", at(51)) is None  # pending now, not dead
    assert await outbox.replay(TENANT, "waiting", at(51)) is None  # never dead
    assert await outbox.replay(TENANT, "missing", at(51)) is None
    assert await outbox.replay("other", "m", at(51)) is None
    assert len(await outbox.attempts(TENANT, "m")) == 1  # the history stays
    claimable = await outbox.claim_due(at(50), limit=10, lease_s=60)
    assert "m" in [m.id for m in claimable]


async def test_recent_messages_and_counts_per_destination(outbox: OutboxStore) -> None:
    await outbox.add(
        [
            message("a1", destination_id="a", created=1),
            message("a2", destination_id="a", created=2),
            message("a3", destination_id="a", created=3),
            message("b1", destination_id="b", created=1),
            message("x1", destination_id="a", created=9, tenant="other"),
        ]
    )
    [claimed] = [m for m in await outbox.claim_due(at(10), limit=10, lease_s=60) if m.id == "a2"]
    await outbox.record_attempt(
        claimed, attempt(claimed, 11, status=200), DeliveryOutcome(state="delivered")
    )
    assert [m.id for m in await outbox.recent(TENANT, "a", limit=2)] == ["a3", "a2"]
    assert [m.id for m in await outbox.recent(TENANT, "b", limit=10)] == ["b1"]
    assert await outbox.counts(TENANT, "a") == {"held": 0, "pending": 2, "delivered": 1, "dead": 0}
    assert await outbox.counts(TENANT) == {"held": 0, "pending": 3, "delivered": 1, "dead": 0}
    assert await outbox.counts("nobody") == {"held": 0, "pending": 0, "delivered": 0, "dead": 0}
    assert await outbox.attempts(TENANT, "a1") == []
