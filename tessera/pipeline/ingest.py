"""The synchronous ingest path: resolve the visitor, build the events, process them (validate,
reshape, map onto the profile), resolve identity and merge, then hand everything to the storage
writer in one change set.

Locking: a request holds its session's key, its profile's key, the keys of the identity values
it brings and of every profile it merges with, all at once. Keys beyond the first set are only
taken without waiting (``LockSet.try_add``); when one is busy the request lets go of everything
and starts again asking for the whole set in sorted order, so two requests can never wait on
each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec

from tessera.errors import StorageUnavailable
from tessera.identity.resolver import (
    IdentityResolver,
    identity_lock_key,
    profile_lock_key,
    snapshot_paths,
)
from tessera.model.common import Ref, new_id, utcnow
from tessera.model.event import Event
from tessera.model.profile import Profile, add_to_stat
from tessera.model.session import Visit
from tessera.pipeline.consents import ConsentRules
from tessera.pipeline.enrich import enrich_new_session
from tessera.pipeline.events import build_event
from tessera.pipeline.locks import KeyedLocks, LockSet
from tessera.pipeline.request import IncomingBatch, IncomingEvent, IngestResult
from tessera.pipeline.visitor import Visitor, VisitorDirectory
from tessera.storage.ports import ChangeSet, EventStore, IdentityLink, RecordWriter, RetiredProfile

# A request retries when a key it needs is busy; past this many rounds the profile is under
# a storm of concurrent changes and the client is told to come back (503).
MAX_ROUNDS = 16

# Processing of a request's events against its profile and session documents: validation,
# reshaping and event-to-profile mapping. Returns warnings for the answer.
EventProcessor = Callable[[list[Event], dict[str, Any], dict[str, Any]], Awaitable[list[str]]]


class Ingestor:
    def __init__(
        self,
        *,
        writer: RecordWriter,
        events: EventStore,
        visitors: VisitorDirectory,
        locks: KeyedLocks,
        identity: IdentityResolver,
        processor: EventProcessor,
        close_visit_after: timedelta = timedelta(minutes=30),
        consents: ConsentRules | None = None,
    ) -> None:
        self._close_visit_after = close_visit_after
        self._consents = consents
        self._writer = writer
        self._events = events
        self._visitors = visitors
        self._locks = locks
        self._identity = identity
        self._processor = processor

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
        wanted: set[str] = {f"s\x00{tenant}\x00{session_id}"}
        for _round in range(MAX_ROUNDS):
            async with self._locks.hold_all(wanted) as held:
                result = await self._ingest_locked(batch, incoming, session_id, now, held)
                if isinstance(result, IngestResult):
                    result.warnings[:0] = warnings
                    return result
                wanted |= result
        raise StorageUnavailable("the profile is changing too often right now; retry")

    async def _ingest_locked(
        self,
        batch: IncomingBatch,
        incoming: list[IncomingEvent],
        session_id: str,
        now: datetime,
        held: LockSet,
    ) -> IngestResult | set[str]:
        """The request's work under its locks; the set of keys to add when one was busy."""
        tenant = batch.tenant
        session = await self._visitors.session(tenant, session_id)
        profile_id, may_exist = await self._visitors.candidate_profile(
            tenant, session, batch.profile_id
        )
        profile_key = profile_lock_key(tenant, profile_id)
        if not await held.try_add([profile_key]):
            return {profile_key}
        visitor = await self._visitors.resolve(
            tenant, batch.source, session_id, session, profile_id, may_exist, now
        )
        events = self._build_events(batch, incoming, visitor, now)
        apply_visit(visitor, events, batch, now, self._close_visit_after)
        warnings, document = await self._process(visitor, events)

        fresh, identity_warnings = self._identity.new_values(
            visitor.profile, document, visitor.identity_before
        )
        warnings += identity_warnings
        visitor.profile = msgspec.convert(document, Profile)
        retired: list[RetiredProfile] = []
        links: list[IdentityLink] = []
        if fresh:
            keys = {identity_lock_key(tenant, value.digest) for value in fresh}
            if not await held.try_add(keys):
                return keys
            # Read owners only now, under the identity locks: a concurrent request may have
            # linked one of these values to its profile since this request began.
            owners = await self._identity.owners(tenant, fresh, visitor.profile.id)
            owner_keys = {profile_lock_key(tenant, owner) for owner in owners}
            if not await held.try_add(owner_keys):
                return owner_keys
            for owner_id in sorted(owners):
                owner = await self._visitors.profile(tenant, owner_id)
                if owner is None or owner.id != owner_id:
                    continue  # merged away meanwhile; its values now point at its survivor
                pending = 1 if visitor.session_is_new or visitor.first_time_in_session else 0
                merged, loser, loser_links = await self._identity.merge(
                    visitor.profile, owner, now, pending
                )
                visitor.profile = merged
                retired.append(loser)
                links += loser_links
            links += self._identity.links(visitor.profile, fresh)
            # Events and sessions keep the id they came in under; the survivor lists it in
            # its ids, so they resolve to it, and an unmerge can give them back.
        await self._commit(visitor, events, links, retired)
        return IngestResult(visitor.profile.id, session_id, [e.id for e in events], warnings)

    async def _process(self, visitor: Visitor, events: list[Event]) -> tuple[list[str], Any]:
        document = msgspec.to_builtins(visitor.profile)
        visitor.identity_before = snapshot_paths(document, self._identity.policy.paths)
        consents_before = dict(document.get("consents") or {})
        session_document = msgspec.to_builtins(visitor.session)
        warnings = await self._processor(events, document, session_document)
        if self._consents is not None:
            warnings += await self._consents.enforce(
                visitor.profile.tenant, consents_before, document
            )
        return warnings, document

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

    async def _commit(
        self,
        visitor: Visitor,
        events: list[Event],
        links: list[IdentityLink],
        retired: list[RetiredProfile],
    ) -> None:
        await self._writer.commit(
            ChangeSet(
                events=events,
                sessions=[visitor.session],
                profiles=[visitor.profile],
                identities=links,
                retired=retired,
            )
        )
        for gone in retired:
            self._visitors.forget_profile(gone.profile.tenant, gone.profile.id)
        self._visitors.remember(visitor)


def apply_visit(
    visitor: Visitor,
    events: list[Event],
    batch: IncomingBatch,
    now: datetime,
    close_visit_after: timedelta,
) -> None:
    """What one request changes on its session and profile."""
    session, profile = visitor.session, visitor.profile
    if visitor.session_is_new:
        session.context = dict(batch.context)
        first_context = batch.events[0].context if batch.events else {}
        session.device = enrich_new_session({**batch.context, **first_context}, batch.headers)
    if batch.properties:
        session.properties.update(batch.properties)
    visit = session.metadata.visit
    if visit is None:
        session.metadata.visit = Visit(number=1, start=now, last=now)
        profile.metadata.time.last_visit = now
    elif now - visit.last > close_visit_after:
        session.metadata.visit = Visit(number=visit.number + 1, start=now, last=now)
        profile.metadata.time.last_visit = now
    else:
        visit.last = now
    session.events += len(events)
    session.metadata.time.update = now
    add_to_stat(profile, "events", len(events))
    # stats.visits counts distinct sessions: a session is counted once for its profile.
    if visitor.first_time_in_session:
        add_to_stat(profile, "visits", 1)
        profile.metadata.time.last_visit = now
    profile.metadata.time.update = now
