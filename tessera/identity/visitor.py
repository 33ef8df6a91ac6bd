"""Finding (or starting) the session and profile a request belongs to.

Callers hold the session's and the profile's locks while they use what this returns, and store
what they changed through ``commit``, which keeps the cache from ever answering a version older
than storage. The cache work rides with the locks (``LockSetLike``): a request that names its
session and profile reads both when it takes their locks (``read_ahead``), and with a shared
cache makes three round trips in all (take and read, check and discard, put back and let go).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tessera.core.cache import CacheKeys, CachePut, RecordCachePort
from tessera.core.locks import LockSetLike, ensure_held
from tessera.errors import StorageUnavailable
from tessera.identity.locking import profile_lock_key, session_lock_key
from tessera.identity.profile_ids import ProfileIds
from tessera.model.common import Ref, new_id
from tessera.model.profile import Profile, new_profile
from tessera.model.session import Session, new_session
from tessera.model.source import EventSource
from tessera.storage.ports import (
    ChangeSet,
    ErasedProfiles,
    ProfileStore,
    RecordWriter,
    SessionStore,
)

log = logging.getLogger(__name__)

# Merges a request follows from the id it was given to the profile that survived them all.
MAX_MERGE_HOPS = 8


@dataclass(slots=True)
class Visitor:
    session: Session
    profile: Profile
    session_is_new: bool
    profile_is_new: bool
    # True when this session had not been counted as a visit of this profile yet.
    first_time_in_session: bool
    # Merge-key values of the profile before this request, to put back a refused one.
    identity_before: dict[str, Any] = field(default_factory=dict)
    # The profile's person parts before this request (see ingest.PERSON_PARTS), encoded.
    person_before: bytes = b""


class VisitorDirectory:
    def __init__(
        self,
        profiles: ProfileStore,
        sessions: SessionStore,
        *,
        profile_cache: RecordCachePort[Profile],
        session_cache: RecordCachePort[Session],
        ids: ProfileIds,
        erased: ErasedProfiles,
    ) -> None:
        self._profiles = profiles
        self._sessions = sessions
        self.ids = ids
        self._erased = erased
        self.profile_cache = profile_cache
        self.session_cache = session_cache

    def lock_keys(self, tenant: str, session_id: str, profile_id: str | None) -> set[str]:
        """The locks of a request of this session that names ``profile_id``: that profile's
        too, as a first guess (it is the session's for a returning visitor), so that one
        round trip takes both and reads them (``read_ahead``). A wrong guess costs a lock
        held for nothing; ``survivor_under_lock`` takes the right one."""
        keys = {session_lock_key(tenant, session_id)}
        if profile_id is not None:
            keys.add(profile_lock_key(tenant, profile_id))
        return keys

    def read_ahead(self, tenant: str, session_id: str, profile_id: str | None) -> list[CacheKeys]:
        """The cache entries the locks of ``lock_keys`` guard."""
        reads = [CacheKeys(self.session_cache, (_key(tenant, session_id),))]
        if profile_id is not None:
            reads.append(CacheKeys(self.profile_cache, (_key(tenant, profile_id),)))
        return reads

    async def session(
        self, tenant: str, session_id: str, held: LockSetLike | None = None
    ) -> Session | None:
        """The session (``held``: the caller's locks, which may have read it ahead)."""
        key = _key(tenant, session_id)
        ahead = held.found(self.session_cache, key) if held is not None else None
        session = ahead.record if ahead is not None else await self.session_cache.get(key)
        if session is None:
            session = await self._sessions.get(tenant, session_id)
            if session is not None:
                await self.session_cache.fill(key, session)
        return session

    async def profile(
        self, tenant: str, profile_id: str, held: LockSetLike | None = None
    ) -> Profile | None:
        """The profile ``profile_id`` names, by any of its ids (``held``: the caller's locks,
        which may have read it ahead)."""
        key = _key(tenant, profile_id)
        ahead = held.found(self.profile_cache, key) if held is not None else None
        profile = ahead.record if ahead is not None else await self.profile_cache.get(key)
        if profile is None:
            profile = await self._profiles.get(tenant, profile_id)
            # Cached under its own id only: an alias would hold a copy that goes stale when
            # the profile changes. Requests that use an alias resolve it to the id first.
            if profile is not None and profile.id == profile_id:
                await self.profile_cache.fill(key, profile)
        return profile

    async def commit(
        self,
        writer: RecordWriter,
        changes: ChangeSet,
        *,
        held: LockSetLike | None,
        put_back: bool = True,
    ) -> None:
        """Store ``changes`` (the caller holds the locks of its records, ``held``) and keep the
        cache in step.

        Each profile and session written, retired profile deleted and profile erased is
        versioned with the fencing token of its lock in ``held`` (``ChangeSet.versions``): a
        write that reaches the store after its holder let go (a bulk request that timed out
        and is applied late) can then never overwrite what a later holder wrote. ``held`` is
        None only for a caller that writes no profile or session (a delayed step of an event
        without a profile); a record whose lock is not in it is written unversioned.

        With ``held``, its locks are checked first (``ensure_held``): one that expired under a
        holder that stalled answers 503 (Busy) before anything is written.

        Every profile and session the change set writes, retires, restores or erases
        turns into a miss *before* the commit (with ``held``: in the same round trip as the
        check): the cache is shared and outlives this process,
        so one killed between its commit and putting the new versions back must leave a miss
        (read again from storage), not the version before, which the next request would build
        on and so lose this one's changes. With ``put_back`` the committed profiles and
        sessions are put back afterwards (with ``held``: when it lets go, while still
        holding the locks), saving the next request a storage read; that is best
        effort: once the records are committed, a cache that cannot be reached must not turn
        the request into an error the client would retry (storing its events twice), and a
        missing entry is a miss, read again from storage."""
        profile_keys = [_key(p.tenant, p.id) for p in changes.profiles]
        profile_keys += [_key(r.profile.tenant, r.profile.id) for r in changes.retired]
        profile_keys += [_key(tenant, profile_id) for tenant, profile_id in changes.restored]
        profile_keys += [
            _key(erasure.tenant, profile_id)
            for erasure in changes.erasures
            for profile_id in erasure.profile_ids
        ]
        session_keys = [_key(s.tenant, s.id) for s in changes.sessions]
        discard = [
            CacheKeys(self.profile_cache, tuple(profile_keys)),
            CacheKeys(self.session_cache, tuple(session_keys)),
        ]
        discard = [entries for entries in discard if entries.keys]
        if held is not None:
            await ensure_held(held, discard)
            changes.versions.update(_versions(changes, held))
        else:
            for entries in discard:
                await entries.cache.discard(*entries.keys)
        await writer.commit(changes)
        if not put_back:
            return
        puts: list[CachePut[Any]] = [
            CachePut(self.profile_cache, _key(p.tenant, p.id), p) for p in changes.profiles
        ]
        puts += [CachePut(self.session_cache, _key(s.tenant, s.id), s) for s in changes.sessions]
        if held is not None:
            held.put_on_release(puts)
            return
        try:
            for put in puts:
                await put.cache.put(put.key, put.record)
        except StorageUnavailable as exc:
            # The rest is not tried: it would most likely wait as long for nothing.
            log.warning("committed records not put back in the cache: %s", exc)

    async def candidate_profile(
        self,
        tenant: str,
        session: Session | None,
        requested: str | None,
        promised: str | None = None,
        *,
        public: bool = False,
        held: LockSetLike | None = None,
    ) -> tuple[str, bool]:
        """Which profile the request will use, and whether it may already exist: the requested
        one (by any of its ids), else the session's, else a fresh id that cannot exist yet.
        A public request's known session keeps its profile: such a request does not move a
        session to another profile (docs/security.md). Only a first guess, taken without a
        lock: ``survivor_under_lock`` settles it."""
        if public and session is not None and session.profile is not None:
            return session.profile.id, True
        if requested is not None:
            existing = await self.profile(tenant, requested, held)
            if existing is not None:
                return existing.id, True
            if not public or self.ids.minted(requested):
                return requested, True
        if session is not None and session.profile is not None:
            return session.profile.id, True
        if promised is not None:  # async intake answered with this id: keep the promise
            return promised, True
        return self.fresh_id(public), False

    def fresh_id(self, public: bool) -> str:
        """A new profile's id: for a public client, one it can prove Tessera issued."""
        return self.ids.mint() if public else new_id()

    async def survivor_under_lock(
        self,
        tenant: str,
        profile_id: str,
        may_exist: bool,
        held: LockSetLike,
        *,
        public: bool = False,
        promised: str | None = None,
    ) -> tuple[str, Profile | None] | set[str]:
        """The profile a request changes, read under *its own* lock; or the lock keys to ask
        for when one is busy.

        ``profile_id`` may name a profile that was merged away (a session still pointing at
        it, a tracker sending the id it was once answered, a merge since the first guess):
        reading it answers the survivor, whose lock the caller does not hold yet. Changing
        the survivor under the merged-away id's lock would let two requests of one person
        change one profile at once and lose one's counters, so the survivor's lock is taken
        and the profile read again under it, until the id read is the id locked.

        An id that names no profile becomes the new profile's id only when it may: never an
        erased profile's (the person asked to be forgotten; a browser still sending the id
        starts a new profile), and for a public request only an id Tessera issued
        (profile_ids.py). Otherwise the new profile gets a fresh id."""
        for _step in range(MAX_MERGE_HOPS):
            key = profile_lock_key(tenant, profile_id)
            reads = [CacheKeys(self.profile_cache, (_key(tenant, profile_id),))]
            if not await held.try_add([key], read_ahead=reads if may_exist else ()):
                return {key}
            if not may_exist:
                return profile_id, None
            profile = await self.profile(tenant, profile_id, held)
            if profile is None:
                if await self._may_take(tenant, profile_id, public):
                    return profile_id, None
                if promised is not None and promised != profile_id:
                    profile_id = promised  # the id async intake promised this session
                else:
                    profile_id, may_exist = self.fresh_id(public), False
                continue
            if profile.id == profile_id:
                return profile_id, profile
            profile_id = profile.id
        raise StorageUnavailable("the profile is being merged right now; retry")

    async def _may_take(self, tenant: str, profile_id: str, public: bool) -> bool:
        if public and not self.ids.minted(profile_id):
            return False
        return not await self._erased.erased(tenant, profile_id)

    def resolve(
        self,
        tenant: str,
        source: EventSource,
        session_id: str,
        session: Session | None,
        profile_id: str,
        profile: Profile | None,
        now: datetime,
    ) -> Visitor:
        """The visitor of a request from the profile ``survivor_under_lock`` found (None:
        a new profile under ``profile_id``)."""
        profile_is_new = profile is None
        if profile is None:
            profile = new_profile(profile_id, tenant, now)
        session_is_new = session is None
        if session is None:
            session = new_session(session_id, tenant, Ref(profile.id), Ref(source.id), now)
            first_time = True
        else:
            first_time = session.profile is None or session.profile.id not in profile.ids
            # The client moved this session to another profile (then it counts as a visit of
            # that one), or the session's profile was merged: either way it points at the
            # profile it belongs to now, so later requests lock the right one at once.
            if session.profile is None or session.profile.id != profile.id:
                session.profile = Ref(profile.id)
        return Visitor(session, profile, session_is_new, profile_is_new, first_time)


def _versions(changes: ChangeSet, held: LockSetLike) -> dict[tuple[str, str, str], int]:
    """The fencing token of each record's lock, by (kind, tenant, id), for the records whose
    lock ``held`` holds."""
    profiles = [(p.tenant, p.id) for p in changes.profiles]
    profiles += [(r.profile.tenant, r.profile.id) for r in changes.retired]
    profiles += [(e.tenant, profile_id) for e in changes.erasures for profile_id in e.profile_ids]
    wanted = [("profile", tenant, i, profile_lock_key(tenant, i)) for tenant, i in profiles]
    wanted += [
        ("session", s.tenant, s.id, session_lock_key(s.tenant, s.id)) for s in changes.sessions
    ]
    versions: dict[tuple[str, str, str], int] = {}
    for kind, tenant, record_id, lock_key in wanted:
        fence = held.fence(lock_key)
        if fence is not None:
            versions[kind, tenant, record_id] = fence
    return versions


def _key(tenant: str, record_id: str) -> str:
    return f"{tenant}\x00{record_id}"
