"""The synchronous ingest path: resolve the visitor, build the events, update the profile and
session, and hand everything to the storage writer in one change set."""

from __future__ import annotations

from datetime import datetime

from tessera.model.common import Ref, new_id, utcnow
from tessera.model.event import Event
from tessera.model.profile import add_to_stat
from tessera.pipeline.events import build_event
from tessera.pipeline.locks import KeyedLocks
from tessera.pipeline.request import IncomingBatch, IncomingEvent, IngestResult
from tessera.pipeline.visitor import Visitor, VisitorDirectory
from tessera.storage.ports import ChangeSet, EventStore, RecordWriter


class Ingestor:
    def __init__(
        self,
        *,
        writer: RecordWriter,
        events: EventStore,
        visitors: VisitorDirectory,
        locks: KeyedLocks,
    ) -> None:
        self._writer = writer
        self._events = events
        self._visitors = visitors
        self._locks = locks

    async def ingest(self, batch: IncomingBatch) -> IngestResult:
        now = utcnow()
        warnings: list[str] = []
        incoming = await self._drop_known_events(batch, warnings)
        if batch.profile_less:
            events = [build_event(batch, e, now=now, profile=None, session=None) for e in incoming]
            await self._writer.commit(ChangeSet(events=events))
            return IngestResult(None, None, [e.id for e in events], warnings)

        tenant = batch.tenant
        session_id = batch.session_id or new_id()
        # Lock order is always session, then profile; nobody takes a session lock while
        # holding a profile lock, so two requests can never wait on each other in a cycle.
        async with self._locks.hold(f"s\x00{tenant}\x00{session_id}"):
            session = await self._visitors.session(tenant, session_id)
            profile_id, known = await self._visitors.candidate_profile(
                tenant, session, batch.profile_id
            )
            async with self._locks.hold(f"p\x00{tenant}\x00{profile_id}"):
                visitor = await self._visitors.resolve(
                    tenant, batch.source, session_id, session, profile_id, known, now
                )
                events = self._build_events(batch, incoming, visitor, now)
                apply_visit(visitor, events, batch, now)
                await self._commit(visitor, events)
        return IngestResult(visitor.profile.id, session_id, [e.id for e in events], warnings)

    async def _drop_known_events(
        self, batch: IncomingBatch, warnings: list[str]
    ) -> list[IncomingEvent]:
        """Events whose client-given id is already stored are not stored again."""
        given = [e.id for e in batch.events if e.id is not None]
        if not given:
            return batch.events
        known = await self._events.existing_ids(batch.tenant, given)
        kept: list[IncomingEvent] = []
        seen: set[str] = set()
        for event in batch.events:
            if event.id is not None:
                if event.id in known or event.id in seen:
                    warnings.append(f"event {event.id!r} was already stored; not stored again")
                    continue
                seen.add(event.id)
            kept.append(event)
        return kept

    @staticmethod
    def _build_events(
        batch: IncomingBatch, incoming: list[IncomingEvent], visitor: Visitor, now: datetime
    ) -> list[Event]:
        profile_ref = Ref(visitor.profile.id)
        session_ref = Ref(visitor.session.id)
        return [
            build_event(batch, event, now=now, profile=profile_ref, session=session_ref)
            for event in incoming
        ]

    async def _commit(self, visitor: Visitor, events: list[Event]) -> None:
        await self._writer.commit(
            ChangeSet(events=events, sessions=[visitor.session], profiles=[visitor.profile])
        )
        self._visitors.remember(visitor)


def apply_visit(visitor: Visitor, events: list[Event], batch: IncomingBatch, now: datetime) -> None:
    """What one request changes on its session and profile."""
    session, profile = visitor.session, visitor.profile
    if visitor.session_is_new:
        session.context = dict(batch.context)
    if batch.properties:
        session.properties.update(batch.properties)
    session.events += len(events)
    session.metadata.time.update = now
    add_to_stat(profile, "events", len(events))
    if visitor.first_time_in_session:
        add_to_stat(profile, "visits", 1)
        profile.metadata.time.last_visit = now
    profile.metadata.time.update = now
