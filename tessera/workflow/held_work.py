"""What a request keeps for after its records: delayed workflow steps and destination messages.
Nothing is run or sent for a request that was not stored, and nothing is lost by a crash
between the records' commit and what comes after it.

The schedule and the outbox live in the configuration store, the records in the record store;
no transaction spans both. So, for every request (``commit``):

1. before the commit, its steps and messages are kept *held*: not due, not sent. They are named
   from what made them (model/common.derived_id), so a retry of the request keeps the same rows
   again instead of new ones;
2. the records are committed; the profile (and the session) remember the request's mark, its
   events carry it (model/applied.py);
3. the held rows are released.

A crash between 2 and 3 leaves rows held. A retry of the request finds its mark on the profile
and releases them (pipeline/ingest.py ``_complete``); when no retry comes (a sync client that
gave up), the sweeper does: a row held longer than ``grace_s`` whose request was stored (its
profile holds the mark, or its event is stored with it) is released, one whose request was
never stored is dropped once held longer than ``abandon_s``. A failure to keep the rows in step
1 fails the request (503) before anything is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from tessera.core.background import BackgroundLoop
from tessera.errors import StorageUnavailable
from tessera.model.common import utcnow
from tessera.model.destination import OutboxMessage
from tessera.storage.automation_ports import OutboxStore, ScheduledStep, ScheduleStore
from tessera.storage.ports import EventStore, ProfileStore

log = logging.getLogger(__name__)

# How many held rows one sweep looks at, per kind.
SWEEP_LIMIT = 200


class HeldWork:
    def __init__(
        self,
        *,
        schedules: ScheduleStore | None,
        outbox: OutboxStore | None,
        profiles: ProfileStore,
        events: EventStore,
        wake_delivery: Callable[[], None] | None = None,
        grace_s: float = 60.0,
        abandon_s: float = 3600.0,
        interval_s: float = 30.0,
    ) -> None:
        self._schedules = schedules
        self._outbox = outbox
        self._profiles = profiles
        self._events = events
        self.wake_delivery = wake_delivery
        self._grace = timedelta(seconds=grace_s)
        self._abandon = timedelta(seconds=abandon_s)
        self._interval_s = interval_s
        self._background = BackgroundLoop("tessera-held-work", self._loop)

    async def commit(
        self,
        tenant: str,
        mark: str,
        store: Callable[[], Awaitable[None]],
        steps: list[ScheduledStep],
        messages: list[OutboxMessage],
    ) -> list[str]:
        """The three steps around ``store`` (the records' commit); warnings for the answer."""
        if not steps and not messages:
            await store()
            return []
        await self.hold(tenant, mark, steps, messages)
        await store()
        return await self.release(tenant, mark)

    async def hold(
        self,
        tenant: str,
        mark: str,
        steps: list[ScheduledStep],
        messages: list[OutboxMessage],
    ) -> None:
        """Step 1: keep the request's steps and messages, held. When the configuration store
        is unavailable this raises (StorageUnavailable, a 503): the request then fails before
        its records are committed, and its retry keeps them."""
        if steps and self._schedules is not None:
            for step in steps:
                step.request = mark
            await self._schedules.add(steps, held=True)
        if messages and self._outbox is not None:
            for message in messages:
                message.request = mark
                message.state = "held"
            await self._outbox.add(messages)

    async def release(self, tenant: str, mark: str) -> list[str]:
        """Step 3: the request's records are stored; its held rows become due. A failure is
        a warning, never an error the client would retry (its records are stored): the rows
        stay held until a retry or the sweeper releases them."""
        try:
            if self._schedules is not None:
                await self._schedules.release(tenant, mark)
            if self._outbox is not None and await self._outbox.release(tenant, mark, utcnow()):
                self._wake()
        except Exception:  # any store failure: logged, the sweeper finishes the job
            log.warning(
                "held steps and messages of a stored request not released yet", exc_info=True
            )
            return ["delayed workflow steps and destination messages will follow shortly"]
        return []

    def _wake(self) -> None:
        if self.wake_delivery is not None:
            self.wake_delivery()

    # --- the sweeper --------------------------------------------------------------------

    def start(self) -> None:
        self._background.start()

    async def stop(self) -> None:
        await self._background.stop()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.sweep(utcnow())
            except StorageUnavailable as exc:  # an outage: the next tick tries again
                log.warning("sweeping held steps and messages waits: %s", exc.message)
            # A failed sweep is tried again at the next tick; it must not end the loop.
            except Exception:
                log.exception("sweeping held steps and messages failed; retrying later")

    async def sweep(self, now: datetime) -> tuple[int, int]:
        """Release the rows held longer than the grace time whose request was stored; drop
        those held longer than the abandon time whose request never was. (released, dropped)
        requests."""
        held: dict[tuple[str, str], tuple[datetime, str | None, str | None]] = {}
        before = now - self._grace
        if self._schedules is not None:
            for step in await self._schedules.held(before, limit=SWEEP_LIMIT):
                if step.request is not None:
                    _note(
                        held,
                        step.tenant,
                        step.request,
                        step.created,
                        step.profile_id,
                        step.event_id,
                    )
        if self._outbox is not None:
            for message in await self._outbox.held(before, limit=SWEEP_LIMIT):
                if message.request is not None:
                    _note(
                        held,
                        message.tenant,
                        message.request,
                        message.created,
                        message.profile_id,
                        message.event_id,
                    )
        released = dropped = 0
        for (tenant, mark), (created, profile_id, event_id) in held.items():
            if await self._stored(tenant, mark, profile_id, event_id):
                await self.release(tenant, mark)
                released += 1
            elif now - created > self._abandon:
                if self._schedules is not None:
                    await self._schedules.drop_held(tenant, mark)
                if self._outbox is not None:
                    await self._outbox.drop_held(tenant, mark)
                dropped += 1
        if released or dropped:
            log.info(
                "held work: %d request(s) released, %d never stored dropped", released, dropped
            )
        return released, dropped

    async def _stored(
        self, tenant: str, mark: str, profile_id: str | None, event_id: str | None
    ) -> bool:
        """Whether the request with this mark was committed."""
        if profile_id is not None:
            profile = await self._profiles.get(tenant, profile_id)
            if profile is not None and mark in profile.metadata.applied:
                return True
        if event_id is not None:
            event = await self._events.get(tenant, event_id)
            if event is not None and event.metadata.request == mark:
                return True
        return False


def _note(
    held: dict[tuple[str, str], tuple[datetime, str | None, str | None]],
    tenant: str,
    mark: str,
    created: datetime,
    profile_id: str | None,
    event_id: str | None,
) -> None:
    """One entry per request: the oldest row's time, and the ids to check it by."""
    known = held.get((tenant, mark))
    if known is None:
        held[(tenant, mark)] = (created, profile_id, event_id)
        return
    oldest, known_profile, known_event = known
    held[(tenant, mark)] = (
        min(oldest, created),
        known_profile or profile_id,
        known_event or event_id,
    )
