"""Held work (tessera/workflow/held_work.py) over every record backend: delayed steps and
destination messages kept before their request's commit are not due until released; when the
process died between the commit and the release, the sweeper releases those whose request was
stored and drops, after the abandon time, those whose request never was.

Before this, steps and messages were written after the commit, so a crash in between lost them
(documented as a limit); and one written for a request that then failed was sent anyway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from tessera.model.applied import PROFILE_MARKS, remember, request_token
from tessera.model.common import utcnow
from tessera.model.destination import OutboxMessage
from tessera.storage.automation_ports import ScheduledStep
from tessera.storage.ports import ChangeSet
from tessera.storage.sql.destinations import SqlOutboxStore
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.stores import SqlSchemaStore
from tessera.storage.sql.workflows import SqlScheduleStore
from tessera.workflow.held_work import HeldWork
from tests.contract.conftest import RecordBackend
from tests.contract.test_record_stores import TENANT, commit, make_event, make_profile

GRACE_S = 60.0
ABANDON_S = 3600.0


@dataclass
class Held:
    work: HeldWork
    schedules: SqlScheduleStore
    outbox: SqlOutboxStore
    records: RecordBackend


@pytest.fixture
async def held(record_backend: RecordBackend, tmp_path: Path) -> AsyncIterator[Held]:
    engine = sqlite_engine(tmp_path / "config")
    (tmp_path / "config").mkdir(exist_ok=True)
    await SqlSchemaStore(engine).create_schema()
    schedules, outbox = SqlScheduleStore(engine), SqlOutboxStore(engine)
    work = HeldWork(
        schedules=schedules,
        outbox=outbox,
        profiles=record_backend.profiles,
        events=record_backend.events,
        grace_s=GRACE_S,
        abandon_s=ABANDON_S,
    )
    try:
        yield Held(work, schedules, outbox, record_backend)
    finally:
        await engine.dispose()


def _step(step_id: str, profile_id: str | None, event_id: str) -> ScheduledStep:
    now = utcnow()
    return ScheduledStep(
        tenant=TENANT,
        id=step_id,
        due=now,
        workflow_id="w",
        workflow_version=1,
        node_id="n",
        port="out",
        payload={},
        event_id=event_id,
        profile_id=profile_id,
        created=now,
    )


def _message(message_id: str, profile_id: str | None, event_id: str) -> OutboxMessage:
    now = utcnow()
    return OutboxMessage(
        tenant=TENANT,
        id=message_id,
        destination_id="d",
        created=now,
        due=now,
        body={},
        event_id=event_id,
        profile_id=profile_id,
    )


async def _due(held: Held) -> tuple[set[str], set[str]]:
    """(ids of the steps due now, ids of the messages pending)."""
    later = utcnow() + timedelta(days=1)
    steps = {s.id for s in await held.schedules.claim_due(later, limit=100, lease_s=1)}
    messages = {m.id for m in await held.outbox.claim_due(later, limit=100, lease_s=1)}
    return steps, messages


async def test_held_work_is_not_due_until_its_request_is_released(held: Held) -> None:
    mark = request_token("r-1")
    await held.work.hold(TENANT, mark, [_step("s1", "p-1", "e1")], [_message("m1", "p-1", "e1")])
    assert await _due(held) == (set(), set())
    assert (await held.outbox.counts(TENANT))["held"] == 1

    assert await held.work.release(TENANT, mark) == []
    assert await _due(held) == ({"s1"}, {"m1"})


async def test_keeping_the_same_work_again_changes_nothing(held: Held) -> None:
    mark = request_token("r-1")
    for _attempt in range(2):  # a retry of the request keeps the same rows again
        await held.work.hold(
            TENANT, mark, [_step("s1", "p-1", "e1")], [_message("m1", "p-1", "e1")]
        )
    await held.work.release(TENANT, mark)
    assert await _due(held) == ({"s1"}, {"m1"})
    assert sum((await held.outbox.counts(TENANT)).values()) == 1  # one message, not two


async def test_the_sweeper_releases_what_a_stored_request_held_and_drops_the_rest(
    held: Held,
) -> None:
    stored, lost, webhook = request_token("r-stored"), request_token("r-lost"), request_token("r-w")
    await held.work.hold(
        TENANT, stored, [_step("s-ok", "p-1", "e1")], [_message("m-ok", "p-1", "e1")]
    )
    await held.work.hold(
        TENANT, lost, [_step("s-lost", "p-2", "e2")], [_message("m-lost", "p-2", "e2")]
    )
    await held.work.hold(TENANT, webhook, [], [_message("m-web", None, "e3")])
    # The commits: "stored" wrote its profile with its mark (then the process died before the
    # release), the webhook stored its event with its mark, "lost" stored nothing.
    profile = make_profile("p-1")
    remember(profile.metadata.applied, stored, PROFILE_MARKS)
    event = make_event("e3", profile=None, session=None)
    event.metadata.request = webhook
    await commit(held.records, ChangeSet(profiles=[profile], events=[event]))

    now = utcnow()
    # Within the grace time nothing is touched: a request may still be between its steps.
    assert await held.work.sweep(now) == (0, 0)
    assert await held.work.sweep(now + timedelta(seconds=GRACE_S + 1)) == (2, 0)
    assert await _due(held) == ({"s-ok"}, {"m-ok", "m-web"})
    # The request that was never stored keeps its work held until the abandon time, then loses it.
    assert await held.work.sweep(now + timedelta(seconds=ABANDON_S + 1)) == (0, 1)
    assert (await held.outbox.counts(TENANT))["held"] == 0
    assert await held.schedules.held(now + timedelta(days=1), limit=10) == []
