"""The ScheduleStore, DocumentStore and ConsentTypeStore contracts, run once per backend.

Built like the other config suites: an opener per backend takes a place and yields the real
stores with the schema installed through the backend's SchemaStore; opening the same place
twice gives independent stores over the same data, as two processes would have. Adding a
backend means adding an opener to ``AUTOMATION_BACKENDS``. Time is passed in, never waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tessera.model.consent import ConsentType
from tessera.model.segment import Segment
from tessera.storage.automation_ports import DocumentStore, ScheduledStep, ScheduleStore
from tessera.storage.config_database import config_schema_store
from tessera.storage.ports import ConsentTypeStore, SchemaStore
from tessera.storage.sql.consents import SqlConsentTypeStore
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.segments import SqlSegmentStore
from tessera.storage.sql.stores import SqlSchemaStore
from tessera.storage.sql.workflows import SqlScheduleStore
from tests.support.mariadb import mariadb_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TENANT = "acme"


@dataclass
class AutomationBackend:
    name: str
    schedules: ScheduleStore
    segments: DocumentStore[Segment]
    consents: ConsentTypeStore
    schema: SchemaStore


AutomationOpener = Callable[[Path], AbstractAsyncContextManager[AutomationBackend]]


@asynccontextmanager
async def sqlite_automation(place: Path) -> AsyncIterator[AutomationBackend]:
    engine = sqlite_engine(place)
    try:
        yield AutomationBackend(
            "sqlite",
            SqlScheduleStore(engine),
            SqlSegmentStore(engine),
            SqlConsentTypeStore(engine),
            SqlSchemaStore(engine),
        )
    finally:
        await engine.dispose()


@asynccontextmanager
async def mariadb_automation(place: Path) -> AsyncIterator[AutomationBackend]:
    async with mariadb_database(place) as database:
        engine = database.engine
        yield AutomationBackend(
            "mariadb",
            SqlScheduleStore(engine),
            SqlSegmentStore(engine),
            SqlConsentTypeStore(engine),
            config_schema_store(engine, database.settings),
        )


AUTOMATION_BACKENDS: dict[str, AutomationOpener] = {
    "sqlite": sqlite_automation,
    "mariadb": mariadb_automation,
}


@pytest.fixture(params=list(AUTOMATION_BACKENDS))
def open_automation(request: pytest.FixtureRequest) -> AutomationOpener:
    return AUTOMATION_BACKENDS[request.param]


@pytest.fixture
async def backend(
    open_automation: AutomationOpener, tmp_path: Path
) -> AsyncIterator[AutomationBackend]:
    async with open_automation(tmp_path / "config") as opened:
        await opened.schema.create_schema()
        yield opened


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step(step_id: str, due: float, tenant: str = TENANT) -> ScheduledStep:
    return ScheduledStep(
        tenant=tenant,
        id=step_id,
        due=at(due),
        workflow_id="wf-1",
        workflow_version=3,
        node_id="n-2",
        port="payload",
        payload={"cart": [1, 2], "note": "ünïcode"},
        event_id="e-1",
        profile_id="p-1",
        created=at(0),
    )


def segment(segment_id: str, created: float, name: str = "Buyers") -> Segment:
    return Segment(
        tenant=TENANT,
        id=segment_id,
        name=name,
        created=at(created),
        condition="profile@traits.orders > 0",
        event_types=["purchase"],
    )


# --- ScheduleStore ------------------------------------------------------------------------------


async def test_due_steps_are_claimed_whole_oldest_first_and_counted(
    backend: AutomationBackend,
) -> None:
    await backend.schedules.add([step("late", 30), step("early", 10), step("future", 100)])

    claimed = await backend.schedules.claim_due(at(50), limit=10, lease_s=60)

    assert [found.id for found in claimed] == ["early", "late"]
    assert claimed[0].payload == {"cart": [1, 2], "note": "ünïcode"}
    assert claimed[0].due == at(10)
    assert [found.attempts for found in claimed] == [1, 1]


async def test_a_leased_step_is_not_claimed_again_until_its_lease_runs_out(
    backend: AutomationBackend,
) -> None:
    await backend.schedules.add([step("s-1", 0)])
    assert len(await backend.schedules.claim_due(at(1), limit=10, lease_s=60)) == 1

    assert await backend.schedules.claim_due(at(30), limit=10, lease_s=60) == []
    again = await backend.schedules.claim_due(at(61), limit=10, lease_s=60)

    assert [found.id for found in again] == ["s-1"]
    assert again[0].attempts == 2


async def test_done_removes_a_step_and_pending_lists_a_tenant_by_due_time(
    backend: AutomationBackend,
) -> None:
    await backend.schedules.add([step("b", 20), step("a", 10), step("x", 5, tenant="other")])

    assert [found.id for found in await backend.schedules.pending(TENANT)] == ["a", "b"]
    await backend.schedules.done(TENANT, "a")

    assert [found.id for found in await backend.schedules.pending(TENANT)] == ["b"]
    assert [found.id for found in await backend.schedules.pending("other")] == ["x"]


async def test_two_runners_on_the_same_data_never_claim_the_same_step(
    open_automation: AutomationOpener, tmp_path: Path
) -> None:
    place = tmp_path / "shared"
    async with open_automation(place) as first, open_automation(place) as second:
        await first.schema.create_schema()
        await first.schedules.add([step(f"s-{number:02}", number) for number in range(40)])

        runners = [first, second] * 4
        claims = await asyncio.gather(
            *(runner.schedules.claim_due(at(100), limit=7, lease_s=60) for runner in runners)
        )
        # Whatever a runner skipped because another held it is still there for the next look.
        rest = await second.schedules.claim_due(at(100), limit=100, lease_s=60)

    claimed = [found.id for batch in [*claims, rest] for found in batch]
    assert len(claimed) == len(set(claimed))
    assert sorted(claimed) == [f"s-{number:02}" for number in range(40)]


# --- DocumentStore ------------------------------------------------------------------------------


async def test_documents_round_trip_and_list_oldest_first(backend: AutomationBackend) -> None:
    newer, older = segment("b-newer", 20), segment("a-older", 10.25)
    await backend.segments.save(newer)
    await backend.segments.save(older)

    assert await backend.segments.get(TENANT, "a-older") == older
    assert await backend.segments.list(TENANT) == [older, newer]
    assert await backend.segments.list("other") == []


async def test_saving_a_document_again_replaces_it_even_unchanged(
    backend: AutomationBackend,
) -> None:
    first = segment("s-1", 10)
    await backend.segments.save(first)
    await backend.segments.save(first)
    changed = segment("s-1", 10, name="Big buyers")
    await backend.segments.save(changed)

    assert await backend.segments.list(TENANT) == [changed]


async def test_document_ids_are_exact(backend: AutomationBackend) -> None:
    await backend.segments.save(segment("vip", 1, name="lower"))
    await backend.segments.save(segment("VIP", 2, name="upper"))
    await backend.segments.save(segment("vip ", 3, name="trailing space"))

    found = {item.id: item.name for item in await backend.segments.list(TENANT)}

    assert found == {"vip": "lower", "VIP": "upper", "vip ": "trailing space"}
    assert await backend.segments.delete(TENANT, "VIP") is True
    assert (await backend.segments.get(TENANT, "vip")) is not None
    assert await backend.segments.get(TENANT, "Vip") is None


async def test_deleting_a_document(backend: AutomationBackend) -> None:
    await backend.segments.save(segment("s-1", 1))
    assert await backend.segments.delete(TENANT, "s-1") is True
    assert await backend.segments.delete(TENANT, "s-1") is False
    assert await backend.segments.get(TENANT, "s-1") is None


# --- ConsentTypeStore ---------------------------------------------------------------------------


async def test_consent_types_round_trip_replace_and_delete(backend: AutomationBackend) -> None:
    marketing = ConsentType(id="marketing", tenant=TENANT, name="Marketing", created=at(1))
    terms = ConsentType(
        id="terms", tenant=TENANT, name="Terms", created=at(2), revokable=False, required=True
    )
    await backend.consents.save(terms)
    await backend.consents.save(marketing)
    await backend.consents.save(marketing)

    assert await backend.consents.list(TENANT) == [marketing, terms]
    assert await backend.consents.get(TENANT, "terms") == terms
    assert await backend.consents.get(TENANT, "Terms") is None
    assert await backend.consents.delete(TENANT, "terms") is True
    assert await backend.consents.list(TENANT) == [marketing]
