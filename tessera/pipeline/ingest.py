"""The synchronous ingest path: resolve the visitor, build the events, process them (validate,
reshape, map onto the profile), resolve identity and merge, then hand everything to the storage
writer in one change set.

Automation (rules, workflows, segments; ``workflow/stage.py``) runs once the first identity
pass has merged what the request's own values name, so workflows see the unified person. It
never runs twice for one request: what it produces that needs more locks (new merge-key values,
merges on keys) is only taken when those locks are free at once; when one is busy, the merge
waits for a later request and the answer says so in a warning.

Locking: a request holds its session's key, its profile's key, the keys of the identity values
it brings and of every profile it merges with, all at once. Keys beyond the first set are only
taken without waiting (``LockSet.try_add``); when one is busy the request lets go of everything
and starts again asking for the whole set in sorted order, so two requests can never wait on
each other in a cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

from tessera.core.locks import Locks, LockSetLike
from tessera.destinations.planner import DestinationPlanner
from tessera.errors import StorageUnavailable
from tessera.identity.keys import KeyValue
from tessera.identity.locking import identity_lock_key, profile_lock_key
from tessera.identity.merge import MergeRefused
from tessera.identity.resolver import IdentityResolver, snapshot_paths
from tessera.identity.visitor import Visitor, VisitorDirectory
from tessera.model.applied import PROFILE_MARKS, SESSION_MARKS, remember, request_token
from tessera.model.common import Ref, new_id, utcnow
from tessera.model.event import Event, event_document
from tessera.model.event_time import filed_moment
from tessera.model.profile import Profile, add_to_stat
from tessera.model.session import Session, Visit
from tessera.pipeline.enrich import enrich_new_session
from tessera.pipeline.events import build_event
from tessera.pipeline.request import IncomingBatch, IncomingEvent, IngestResult
from tessera.query.ast import Compare, Field, Literal
from tessera.storage.ports import (
    ChangeSet,
    EventStore,
    IdentityLink,
    ProfileStore,
    RecordWriter,
    RetiredProfile,
)
from tessera.storage.search import SearchRequest
from tessera.workflow.action import dig
from tessera.workflow.consents import ConsentRules
from tessera.workflow.held_work import HeldWork
from tessera.workflow.stage import AutomationStage, StageOutcome, Subject

log = logging.getLogger(__name__)

# A request retries when a key it needs is busy; past this many rounds the profile is under
# a storm of concurrent changes and the client is told to come back (503).
MAX_ROUNDS = 16
# Profiles a workflow's "merge on key" may bring together in one request.
MAX_KEY_MERGES = 20

# Processing of a request's events against its profile and session documents: validation,
# reshaping and event-to-profile mapping. Returns warnings for the answer.
EventProcessor = Callable[[list[Event], dict[str, Any], dict[str, Any]], Awaitable[list[str]]]


@dataclass(slots=True)
class _Merges:
    """What an identity pass decided: profiles retired into the survivor, and index links."""

    retired: list[RetiredProfile] = field(default_factory=list)
    links: list[IdentityLink] = field(default_factory=list)
    # Values a public request brought that another person's profile holds: not taken.
    refused: list[KeyValue] = field(default_factory=list)
    # Merges not made because the result would pass a bound of a profile (model/bounds.py).
    warnings: list[str] = field(default_factory=list)


class Ingestor:
    def __init__(
        self,
        *,
        writer: RecordWriter,
        events: EventStore,
        visitors: VisitorDirectory,
        locks: Locks,
        identity: IdentityResolver,
        processor: EventProcessor,
        consents: ConsentRules,
        automation: AutomationStage,
        profiles: ProfileStore,
        held_work: HeldWork,
        destinations: DestinationPlanner,
        close_visit_after: timedelta = timedelta(minutes=30),
    ) -> None:
        self.automation = automation
        self._profiles = profiles
        self.held_work = held_work
        self.destinations = destinations
        self._close_visit_after = close_visit_after
        self._consents = consents
        self._writer = writer
        self._events = events
        self._visitors = visitors
        self._locks = locks
        self._identity = identity
        self._processor = processor

    async def ingest(self, batch: IncomingBatch) -> IngestResult:
        now = taken_in_at(batch)
        warnings: list[str] = []
        mark = request_mark(batch)
        if batch.profile_less:
            known = await self._known_events(batch, now)
            incoming = _unknown(batch, known, warnings)
            events = [
                build_event(batch, e, now=now, profile=None, session=None, request=mark)
                for e in incoming
            ]
            outcome = await self._automate(Subject(batch.tenant, None, None), events, now, batch)
            stored = events + outcome.internal_events
            _mark_events(outcome.internal_events, mark)
            messages: list[Any] = []
            if not batch.history and await self.destinations.active(batch.tenant):
                messages = await self._plan_deliveries(
                    batch.tenant, stored, None, None, False, mark
                )
            # The delayed steps and messages are held before the commit, released after it.
            warnings += await self.held_work.commit(
                batch.tenant,
                mark,
                lambda: self._writer.commit(ChangeSet(events=stored)),
                outcome.schedules,
                messages,
            )
            answer = IngestResult(None, None, [e.id for e in events], warnings + outcome.warnings)
            answer.debug = outcome.traces if batch.debug else None
            return answer

        tenant = batch.tenant
        session_id = batch.session_id or new_id()
        wanted = self._visitors.lock_keys(tenant, session_id, batch.profile_id)
        read_ahead = self._visitors.read_ahead(tenant, session_id, batch.profile_id)
        for _round in range(MAX_ROUNDS):
            async with self._locks.hold_all(wanted, read_ahead) as held:
                result = await self._ingest_locked(batch, session_id, now, held, mark)
            if isinstance(result, IngestResult):
                break
            wanted |= result
        else:
            raise StorageUnavailable("the profile is changing too often right now; retry")
        result.warnings[:0] = warnings
        deferred, result.deferred = result.deferred, None
        if deferred is not None and result.profile_id is not None:
            # Made now that this request holds nothing, waiting for the profiles it needs.
            # The request is stored: an outage now is a warning, never an error its client
            # would answer by sending everything again.
            try:
                result.warnings += await self.merge_later(tenant, result.profile_id, *deferred)
            except StorageUnavailable as exc:
                log.warning("a merge asked for by a workflow was not made: %s", exc.message)
                result.warnings.append(
                    "a merge asked for by a workflow was not made: storage unavailable"
                )
        return result

    async def _ingest_locked(
        self,
        batch: IncomingBatch,
        session_id: str,
        now: datetime,
        held: LockSetLike,
        mark: str,
    ) -> IngestResult | set[str]:
        """The request's work under its locks; the set of keys to add when one was busy."""
        tenant = batch.tenant
        # Under the session's lock: a retry of the same request (same event ids) that came in
        # while the first was being processed meets its stored events here, so neither the
        # events nor the profile's counters are taken twice.
        known = await self._known_events(batch, now)
        session = await self._visitors.session(tenant, session_id, held)
        public = not batch.source.trusted
        profile_id, may_exist = await self._visitors.candidate_profile(
            tenant, session, batch.profile_id, batch.new_profile_id, public=public, held=held
        )
        found = await self._visitors.survivor_under_lock(
            tenant, profile_id, may_exist, held, public=public, promised=batch.new_profile_id
        )
        if isinstance(found, set):
            return found
        profile_id, profile = found
        # A new profile or session is first seen at the batch's first event (history_start).
        visitor = self._visitors.resolve(
            tenant,
            batch.source,
            session_id,
            session,
            profile_id,
            profile,
            history_start(batch, now),
        )
        promise_answered = self._visitors.ids.answers_promise(batch.profile_id, public)
        if batch.new_profile_id is not None and promise_answered and not visitor.profile_is_new:
            await self._keep_promise(visitor.profile, batch.new_profile_id)
        if mark in visitor.profile.metadata.applied:
            return await self._complete(batch, visitor, known, now, mark, held)
        known_warnings: list[str] = []
        incoming = await self._unstored(batch, known, mark, known_warnings, now)
        events = self._build_events(batch, incoming, visitor, now, mark)
        if batch.history and not events:
            # Imported before: a second import changes nothing, not even the times.
            return IngestResult(visitor.profile.id, visitor.session.id, [], known_warnings)
        apply_visit(
            visitor,
            events,
            batch,
            now,
            self._close_visit_after,
            session_counted=mark in visitor.session.metadata.applied,
        )
        watched = not batch.history and await self.destinations.active(tenant)
        warnings, document, session_document = await self._process(visitor, events, watched)

        # What a public request may do with identifiers (docs/security.md, "Trust model"): add
        # one where the profile holds none, never replace one it holds, and never merge into a
        # profile that holds the value already unless its source allows it.
        replace = not public
        claims_only = public and not batch.source.public_merge
        fresh, identity_warnings = self._identity.new_values(
            visitor.profile, document, visitor.identity_before, replace=replace
        )
        warnings += identity_warnings
        home = visitor.profile.metadata.partition
        visitor.profile = msgspec.convert(document, Profile)
        # Where the store keeps the profile is the store's to say, never a workflow's.
        visitor.profile.metadata.partition = home
        # A public request is answered the id it came in under even when a merge makes it part
        # of another person's profile (the id stays one of that profile's): its answer never
        # names another person's profile (docs/security.md).
        own_id = visitor.profile.id
        pending = 1 if visitor.session_is_new or visitor.first_time_in_session else 0
        first = await self._identify(
            visitor.profile, fresh, set(), held, now, pending, mark, claims_only=claims_only
        )
        if isinstance(first, set):
            return first
        visitor.profile, merges = first
        if merges.refused:
            visitor.profile = self._identity.without_values(
                visitor.profile, merges.refused, visitor.identity_before
            )
            document = msgspec.to_builtins(visitor.profile)
        warnings += merges.warnings
        request_event_ids = [event.id for event in events]

        outcome = StageOutcome()
        deferred: tuple[dict[str, Any], list[str]] | None = None
        if not batch.history:
            # The pass above may have merged or indexed: the stage works on the profile as it
            # is now, and whatever it changes is converted back once.
            if merges.retired or merges.links:
                document = msgspec.to_builtins(visitor.profile)
            before = snapshot_paths(document, self._identity.policy.paths)
            outcome = await self._automate(
                Subject(tenant, document, session_document), events, now, batch
            )
            warnings += outcome.warnings
            _mark_events(outcome.internal_events, mark)
            events += outcome.internal_events
            if outcome.session_changed:
                session_home = visitor.session.metadata.partition
                visitor.session = msgspec.convert(session_document, Session)
                visitor.session.metadata.partition = session_home
            if outcome.profile_changed or outcome.merge_on:
                changed_profile = _converted(document, visitor.profile, warnings)
                more, more_warnings = self._identity.new_values(
                    changed_profile, document, before, replace=replace
                )
                warnings += more_warnings
                visitor.profile = changed_profile
                key_owners = await self._key_owners(visitor.profile, document, outcome.merge_on)
                second = await self._identify(
                    visitor.profile,
                    more,
                    key_owners,
                    held,
                    now,
                    pending,
                    mark,
                    claims_only=claims_only,
                )
                if isinstance(second, set):
                    # The workflows do not run again for a retry: the merge is made after the
                    # commit, once this request holds no lock (merge_later).
                    deferred = (before, outcome.merge_on)
                else:
                    visitor.profile, more_merges = second
                    warnings += more_merges.warnings
                    merges.retired += more_merges.retired
                    merges.links += more_merges.links
                    if more_merges.refused:
                        visitor.profile = self._identity.without_values(
                            visitor.profile, more_merges.refused, before
                        )
                    if more_merges.retired or more_merges.refused:
                        document = msgspec.to_builtins(visitor.profile)
        messages: list[Any] = []
        if watched:
            changed = (
                outcome.profile_changed
                or bool(merges.retired)
                or _person_parts(document) != visitor.person_before
            )
            messages = await self._plan_deliveries(
                tenant, events, document, session_document, changed, mark
            )
        remember(visitor.profile.metadata.applied, mark, PROFILE_MARKS)
        remember(visitor.session.metadata.applied, mark, SESSION_MARKS)
        # The commit checks the locks first (VisitorDirectory.commit).
        changes = ChangeSet(
            events=events,
            sessions=[visitor.session],
            profiles=[visitor.profile],
            identities=merges.links,
            retired=merges.retired,
        )
        # The delayed steps and messages are held before the commit, released after it.
        warnings += await self.held_work.commit(
            tenant,
            mark,
            lambda: self._visitors.commit(self._writer, changes, held=held),
            outcome.schedules,
            messages,
        )
        answered = own_id if public and own_id in visitor.profile.ids else visitor.profile.id
        result = IngestResult(answered, session_id, request_event_ids, known_warnings + warnings)
        result.debug = outcome.traces if batch.debug else None
        result.deferred = deferred
        return result

    async def _keep_promise(self, profile: Profile, promised: str) -> None:
        """Async intake answered ``promised`` (the session's derived id) before any worker
        knew the session; it belongs to ``profile``. Unless a profile of that id exists on its
        own, the id becomes one of this profile's ids, so the answer finds the profile that
        got the events (see workers/intake.py)."""
        if promised in profile.ids:
            return
        if await self._visitors.profile(profile.tenant, promised) is not None:
            return
        profile.ids.append(promised)

    async def merge_later(
        self, tenant: str, profile_id: str, before: dict[str, Any], merge_on: list[str]
    ) -> list[str]:
        """Index the merge-key values the profile holds that differ from ``before`` and merge
        on them and on ``merge_on`` paths, waiting for every lock it needs (the caller holds
        none). Used when a request's own locks could not be widened without waiting, and by
        delayed workflow steps. Answers warnings."""
        wanted = {profile_lock_key(tenant, profile_id)}
        for _round in range(MAX_ROUNDS):
            async with self._locks.hold_all(wanted) as held:
                profile = await self._visitors.profile(tenant, profile_id)
                if profile is None:
                    return []
                if profile.id != profile_id:  # merged meanwhile: go on with the survivor
                    profile_id = profile.id
                    wanted.add(profile_lock_key(tenant, profile_id))
                    continue
                now = utcnow()
                document = msgspec.to_builtins(profile)
                fresh, warnings = self._identity.new_values(profile, document, before)
                key_owners = await self._key_owners(profile, document, merge_on)
                step = await self._identify(profile, fresh, key_owners, held, now, 0)
                if isinstance(step, set):
                    wanted |= step
                    continue
                merged, merges = step
                warnings += merges.warnings
                if merges.retired or merges.links:
                    merged.metadata.time.update = now
                    await self._visitors.commit(
                        self._writer,
                        ChangeSet(
                            profiles=[merged], identities=merges.links, retired=merges.retired
                        ),
                        held=held,
                    )
                return warnings
        return ["a merge asked for by a workflow was not made: the profiles are changing too often"]

    async def _identify(
        self,
        profile: Profile,
        fresh: list[Any],
        key_owners: set[str],
        held: LockSetLike,
        now: datetime,
        pending: int,
        mark: str | None = None,
        *,
        claims_only: bool = False,
    ) -> tuple[Profile, _Merges] | set[str]:
        """Index the new merge-key values and merge with the profiles that hold them (or hold
        the same value at a key a workflow named); the keys to add when one was busy.
        ``pending`` counts this request's sessions not stored yet (for the visit count).
        ``claims_only`` (a public request): a value another existing profile holds is neither
        taken nor merged on; it comes back in ``refused``, and nothing in the answer tells it
        apart from a value that was taken, so a sender cannot learn who is a customer."""
        merges = _Merges()
        tenant = profile.tenant
        owners = set(key_owners)
        if fresh:
            keys = {identity_lock_key(tenant, value.digest) for value in fresh}
            if not await held.try_add(keys):
                return keys
            # Read owners only now, under the identity locks: a concurrent request may have
            # linked one of these values to its profile since this request began.
            found = await self._identity.owners_of(tenant, fresh, profile.id)
            if claims_only and found:
                held_by_others = await self._held_elsewhere(tenant, found, profile)
                merges.refused = [value for value in fresh if value.digest in held_by_others]
                fresh = [value for value in fresh if value.digest not in held_by_others]
            else:
                owners |= set(found.values())
        owners.discard(profile.id)
        # Values whose owner was not merged (a bound) stay indexed under that owner.
        kept_by_owner: set[str] = set()
        if owners:
            owner_keys = {profile_lock_key(tenant, owner) for owner in owners}
            if not await held.try_add(owner_keys):
                return owner_keys
        for owner_id in sorted(owners):
            owner = await self._visitors.profile(tenant, owner_id)
            if owner is None or owner.id != owner_id or owner_id in profile.ids:
                # Merged away meanwhile: its survivor holds its values (a merge whose commit
                # was cut short is completed by its own retry, see _complete).
                continue
            try:
                profile, loser, loser_links = await self._identity.merge(
                    profile, owner, now, pending, request=mark
                )
            except MergeRefused as refused:
                merges.warnings.append(refused.message)
                kept_by_owner.update(d for ds in owner.metadata.identity.values() for d in ds)
                continue
            merges.retired.append(loser)
            merges.links += loser_links
        if fresh:
            fresh = [value for value in fresh if value.digest not in kept_by_owner]
            merges.links += self._identity.links(profile, fresh)
        # Events and sessions keep the id they came in under; the survivor lists it in its
        # ids, so they resolve to it, and an unmerge can give them back.
        return profile, merges

    async def _held_elsewhere(
        self, tenant: str, found: dict[str, str], profile: Profile
    ) -> set[str]:
        """Of the values the identity index gives an owner, those another existing profile
        holds (a link to a profile never stored, or one merged into this one, holds nothing)."""
        taken: set[str] = set()
        for digest, owner_id in found.items():
            owner = await self._visitors.profile(tenant, owner_id)
            if owner is not None and owner.id != profile.id:
                taken.add(digest)
        return taken

    async def _key_owners(
        self, profile: Profile, document: dict[str, Any], paths: list[str]
    ) -> set[str]:
        """Profiles other than this one holding the same value at each of ``paths``."""
        if not paths:
            return set()
        found: set[str] = set()
        for path in dict.fromkeys(paths):
            value = dig(document, path.split("."))
            if not isinstance(value, str | int | float) or isinstance(value, bool) or value == "":
                continue
            same = Compare("==", Field("profile", tuple(path.split("."))), Literal(value))
            request = SearchRequest(condition=same, limit=MAX_KEY_MERGES)
            page = await self._profiles.search(profile.tenant, request)
            found |= {item.id for item in page.items if item.id not in profile.ids}
        return found

    async def _automate(
        self, subject: Subject, events: list[Event], now: datetime, batch: IncomingBatch
    ) -> StageOutcome:
        if batch.history:
            return StageOutcome()
        return await self.automation.run(subject, events, now, debug=batch.debug)

    async def _plan_deliveries(
        self,
        tenant: str,
        events: list[Event],
        profile: dict[str, Any] | None,
        session: dict[str, Any] | None,
        profile_changed: bool,
        mark: str,
    ) -> list[Any]:
        return await self.destinations.plan(
            tenant,
            events=[event_document(event) for event in events],
            profile=profile,
            session=session,
            profile_changed=profile_changed,
            request=mark,
        )

    async def _process(
        self, visitor: Visitor, events: list[Event], watched: bool
    ) -> tuple[list[str], Any, dict[str, Any]]:
        document = msgspec.to_builtins(visitor.profile)
        visitor.identity_before = snapshot_paths(document, self._identity.policy.paths)
        consents_before = dict(document.get("consents") or {})
        if watched:  # only destinations ask whether the person changed
            visitor.person_before = _person_parts(document)
        session_document = msgspec.to_builtins(visitor.session)
        warnings = await self._processor(events, document, session_document)
        warnings += await self._consents.enforce(visitor.profile.tenant, consents_before, document)
        return warnings, document, session_document

    async def _known_events(self, batch: IncomingBatch, now: datetime) -> set[str]:
        """The request's client-given (or intake-stamped) event ids that are stored already.
        Asked with each event's time, which places it in a store cut in time partitions: an
        id is looked for where this request would store it (storage/elastic/writer.py)."""
        moments = _event_moments(batch, now)
        if not moments:
            return set()
        return await self._events.existing_ids(batch.tenant, list(moments), moments=moments)

    async def _unstored(
        self,
        batch: IncomingBatch,
        known: set[str],
        mark: str,
        warnings: list[str],
        now: datetime,
    ) -> list[IncomingEvent]:
        """The events to take in. A stored event is taken in again only when an earlier
        attempt of this very request stored it and was cut short before its profile was
        written (it carries the request's mark): it was never counted. Events another request
        stored are not stored or counted again."""
        ours: set[str] = set()
        moments = _event_moments(batch, now)
        for event_id in known:
            stored = await self._events.get(batch.tenant, event_id, moment=moments.get(event_id))
            if stored is not None and stored.metadata.request == mark:
                ours.add(event_id)
        return _unknown(batch, known - ours, warnings)

    async def _complete(
        self,
        batch: IncomingBatch,
        visitor: Visitor,
        known: set[str],
        now: datetime,
        mark: str,
        held: LockSetLike,
    ) -> IngestResult:
        """A retry of a request the profile took in already (it holds the request's mark):
        the first attempt's commit was cut short after the profile was written. Nothing is
        counted or run again; what the commit may not have stored is stored now: the events
        still missing, the session when it does not hold the mark, and the retirement of the
        profiles that request merged in (their values then point at the survivor)."""
        profile, session = visitor.profile, visitor.session
        tenant = profile.tenant
        # This request's events: those stored by no request yet and those its first attempt
        # stored (storing those again changes nothing: events are insert-once).
        incoming = await self._unstored(batch, known, mark, [], now)
        events = self._build_events(batch, incoming, visitor, now, mark)
        if events:
            # The events are processed (validated, reshaped) as the first attempt did; the
            # profile and session documents that processing changes are copies, thrown away.
            await self._processor(
                events, msgspec.to_builtins(profile), msgspec.to_builtins(session)
            )
        sessions: list[Session] = []
        if mark not in session.metadata.applied:
            apply_visit(visitor, events, batch, now, self._close_visit_after, profile_counted=True)
            remember(session.metadata.applied, mark, SESSION_MARKS)
            sessions.append(session)
        retired: list[RetiredProfile] = []
        for entry in profile.metadata.merges:
            if entry.get("request") == mark:
                gone = await self._profiles.retired(tenant, str(entry.get("merged_id")))
                if gone is not None:
                    retired.append(gone)
        # Phase 3 of the commit (storage/elastic/writer.py): the merged-away profiles leave,
        # their values point at the survivor.
        links = [
            link
            for gone in retired
            for link in self._identity.loser_links(gone.profile, profile.id)
        ]
        changes = ChangeSet(events=events, sessions=sessions, identities=links, retired=retired)
        if len(changes):
            await self._visitors.commit(self._writer, changes, held=held)
        # The first attempt kept its steps and messages held; it may not have lived to
        # release them.
        await self.held_work.release(tenant, mark)
        # Answered as any request whose events were stored already: those are named in
        # warnings, the answer lists the events stored now.
        warnings: list[str] = []
        _unknown(batch, known, warnings)
        stored_now = [event.id for event in events if event.id not in known]
        return IngestResult(profile.id, session.id, stored_now, warnings)

    @staticmethod
    def _build_events(
        batch: IncomingBatch,
        incoming: list[IncomingEvent],
        visitor: Visitor,
        now: datetime,
        mark: str,
    ) -> list[Event]:
        profile_ref = Ref(visitor.profile.id)
        session_ref = Ref(visitor.session.id)
        return [
            build_event(
                batch, event, now=now, profile=profile_ref, session=session_ref, request=mark
            )
            for event in incoming
        ]


def _mark_events(events: list[Event], mark: str) -> None:
    """Events the request's workflows made belong to it like its own (model/applied.py)."""
    for event in events:
        event.metadata.request = mark


def request_mark(batch: IncomingBatch) -> str:
    """The request's apply-once mark (model/applied.py): from its first event id, which a
    retry carries again (async intake stamps every id; a tracker resends its own), else a
    fresh one (a retry then cannot be told from a new request, as before)."""
    first = next((event.id for event in batch.events if event.id is not None), None)
    return request_token(first if first is not None else new_id())


def _unknown(batch: IncomingBatch, known: set[str], warnings: list[str]) -> list[IncomingEvent]:
    """The request's events but those in ``known`` and repeats of an id within it."""
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


# What a person is, as opposed to what every request changes (stats, times): a "profile changed"
# destination fires when one of these parts did.
PERSON_PARTS = ("traits", "data", "consents", "interests", "segments")


def _converted(document: dict[str, Any], unchanged: Profile, warnings: list[str]) -> Profile:
    """The profile a workflow changed; the one before the workflows when their changes do not
    make a profile (actions check what they write, so only a plugin could get here)."""
    try:
        changed = msgspec.convert(document, Profile)
    except msgspec.ValidationError as exc:
        log.error("workflows left a profile that is not valid (%s); their changes are dropped", exc)
        warnings.append("the workflows' changes to the profile were not valid and were dropped")
        return unchanged
    # Where the store keeps the profile is the store's to say, never a workflow's.
    changed.metadata.partition = unchanged.metadata.partition
    return changed


def _person_parts(document: dict[str, Any]) -> bytes:
    return msgspec.json.encode([document.get(part) for part in PERSON_PARTS])


def apply_visit(
    visitor: Visitor,
    events: list[Event],
    batch: IncomingBatch,
    now: datetime,
    close_visit_after: timedelta,
    *,
    session_counted: bool = False,
    profile_counted: bool = False,
) -> None:
    """What one request changes on its session and profile; ``session_counted`` /
    ``profile_counted``: that record took this request in already (a retry, see
    model/applied.py), so its part is left as it is."""
    if not session_counted:
        _visit_session(visitor, events, batch, now, close_visit_after)
    if not profile_counted:
        _visit_profile(visitor, events, history_start(batch, now), now)


def _visit_session(
    visitor: Visitor,
    events: list[Event],
    batch: IncomingBatch,
    now: datetime,
    close_visit_after: timedelta,
) -> None:
    session, profile = visitor.session, visitor.profile
    started = history_start(batch, now)
    if visitor.session_is_new:
        session.context = dict(batch.context)
        first_context = batch.events[0].context if batch.events else {}
        session.device = enrich_new_session({**batch.context, **first_context}, batch.headers)
    if batch.properties:
        session.properties.update(batch.properties)
    visit = session.metadata.visit
    if visit is None:
        session.metadata.visit = Visit(number=1, start=started, last=now)
        profile.metadata.time.last_visit = started
    elif started - visit.last > close_visit_after:
        session.metadata.visit = Visit(number=visit.number + 1, start=started, last=now)
        profile.metadata.time.last_visit = started
    else:
        visit.last = max(visit.last, now)
    session.events += len(events)
    # max: an import of older history never moves a record's last-seen time back.
    session.metadata.time.update = max(session.metadata.time.update, now)


def _visit_profile(visitor: Visitor, events: list[Event], started: datetime, now: datetime) -> None:
    profile = visitor.profile
    add_to_stat(profile, "events", len(events))
    # stats.visits counts distinct sessions: a session is counted once for its profile.
    if visitor.first_time_in_session:
        add_to_stat(profile, "visits", 1)
        profile.metadata.time.last_visit = started
    profile.metadata.time.update = max(profile.metadata.time.update, now)


def taken_in_at(batch: IncomingBatch) -> datetime:
    """The moment a batch is taken in: now; for a history import, its last event's time, so
    its records are stamped, and its events filed, as of when they happened."""
    if batch.history:
        times = [event.time for event in batch.events if event.time is not None]
        if times:
            return max(times)
    return utcnow()


def history_start(batch: IncomingBatch, now: datetime) -> datetime:
    """When a batch's visit began: ``now`` on the live path; a history batch's first event's
    time (a profile or session it creates is first seen then)."""
    if batch.history:
        times = [event.time for event in batch.events if event.time is not None]
        if times:
            return min(times)
    return now


def _event_moments(batch: IncomingBatch, now: datetime) -> dict[str, datetime]:
    """The moment each of the request's events with an id is filed under, as the store files
    it: its time (build_event's) within the bounds around ``now``, when it is taken in."""
    return {e.id: filed_moment(e.time or now, now) for e in batch.events if e.id is not None}
