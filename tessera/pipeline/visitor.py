"""Finding (or starting) the session and profile a request belongs to.

Callers hold the session's and the profile's locks while they use what this returns, and put
the records back (``remember``) only once they are committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tessera.model.common import Ref, new_id
from tessera.model.profile import Profile, new_profile
from tessera.model.session import Session, new_session
from tessera.model.source import EventSource
from tessera.pipeline.cache import RecordCachePort
from tessera.storage.ports import ProfileStore, SessionStore


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
    ) -> None:
        self._profiles = profiles
        self._sessions = sessions
        self.profile_cache = profile_cache
        self.session_cache = session_cache

    async def session(self, tenant: str, session_id: str) -> Session | None:
        key = f"{tenant}\x00{session_id}"
        session = await self.session_cache.get(key)
        if session is None:
            session = await self._sessions.get(tenant, session_id)
            if session is not None:
                await self.session_cache.fill(key, session)
        return session

    async def profile(self, tenant: str, profile_id: str) -> Profile | None:
        key = f"{tenant}\x00{profile_id}"
        profile = await self.profile_cache.get(key)
        if profile is None:
            profile = await self._profiles.get(tenant, profile_id)
            # Cached under its own id only: an alias would hold a copy that goes stale when
            # the profile changes. Requests that use an alias resolve it to the id first.
            if profile is not None and profile.id == profile_id:
                await self.profile_cache.fill(key, profile)
        return profile

    async def forget_profile(self, tenant: str, profile_id: str) -> None:
        await self.profile_cache.discard(f"{tenant}\x00{profile_id}")

    async def remember_profile(self, profile: Profile) -> None:
        """Put back a profile committed without its session (e.g. by re-segmentation)."""
        await self.profile_cache.put(f"{profile.tenant}\x00{profile.id}", profile)

    async def remember_session(self, session: Session) -> None:
        """Put back a session committed without its profile (e.g. by a delayed step)."""
        await self.session_cache.put(f"{session.tenant}\x00{session.id}", session)

    async def remember(self, visitor: Visitor) -> None:
        tenant = visitor.profile.tenant
        await self.profile_cache.put(f"{tenant}\x00{visitor.profile.id}", visitor.profile)
        await self.session_cache.put(f"{tenant}\x00{visitor.session.id}", visitor.session)

    async def candidate_profile(
        self,
        tenant: str,
        session: Session | None,
        requested: str | None,
        promised: str | None = None,
    ) -> tuple[str, bool]:
        """Which profile the request will use, and whether it may already exist: the requested
        one (by any of its ids), else the session's, else a fresh id that cannot exist yet.
        The profile itself is read again under its lock."""
        if requested is not None:
            existing = await self.profile(tenant, requested)
            return (existing.id, True) if existing is not None else (requested, True)
        if session is not None and session.profile is not None:
            return session.profile.id, True
        if promised is not None:  # async intake answered with this id: keep the promise
            return promised, True
        return new_id(), False

    async def resolve(
        self,
        tenant: str,
        source: EventSource,
        session_id: str,
        session: Session | None,
        profile_id: str,
        may_exist: bool,
        now: datetime,
    ) -> Visitor:
        profile = await self.profile(tenant, profile_id) if may_exist else None
        profile_is_new = profile is None
        if profile is None:
            profile = new_profile(profile_id, tenant, now)
        session_is_new = session is None
        if session is None:
            session = new_session(session_id, tenant, Ref(profile.id), Ref(source.id), now)
            first_time = True
        else:
            first_time = session.profile is None or session.profile.id not in profile.ids
            if first_time:
                # The client moved this session to another profile; it now counts for that one.
                session.profile = Ref(profile.id)
        return Visitor(session, profile, session_is_new, profile_is_new, first_time)
