"""Operations on one person's profile from the management API: unmerge, erase, anonymize,
export. Each runs under the same per-profile locks as ingestion, so it never races a /track."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec

from tessera.core.locks import Locks, LockSetLike
from tessera.errors import Busy, InvalidPayload, NotFound
from tessera.identity.keys import read_path
from tessera.identity.locking import profile_lock_key
from tessera.identity.visitor import MAX_MERGE_HOPS, VisitorDirectory
from tessera.model.common import utcnow
from tessera.model.profile import Profile
from tessera.storage.ports import (
    ChangeSet,
    ErasedProfiles,
    Erasure,
    EventStore,
    IdentityLink,
    ProfileStore,
    RecordWriter,
    SessionStore,
)

# Parts of a profile that describe the person; anonymizing removes them all.
PERSONAL_PARTS = ("traits", "data")


@dataclass
class ProfileOperations:
    profiles: ProfileStore
    sessions: SessionStore
    events: EventStore
    writer: RecordWriter
    visitors: VisitorDirectory
    locks: Locks
    erased: ErasedProfiles

    async def _current(self, tenant: str, profile_id: str) -> Profile:
        profile = await self.profiles.get(tenant, profile_id)
        if profile is None:
            raise NotFound(f"profile {profile_id!r} does not exist")
        return profile

    @asynccontextmanager
    async def _holding(
        self, tenant: str, profile_id: str, more_keys: Iterable[str] = ()
    ) -> AsyncIterator[tuple[Profile, LockSetLike]]:
        """The profile ``profile_id`` resolves to, read under its own lock (and ``more_keys``).
        An id may name a merged-away profile, and a merge may happen between the first read
        and the lock: the lock is then the survivor's, taken before anything is changed."""
        more = list(more_keys)
        profile = await self._current(tenant, profile_id)
        for _hop in range(MAX_MERGE_HOPS):
            async with self.locks.hold_all([profile_lock_key(tenant, profile.id), *more]) as held:
                current = await self._current(tenant, profile.id)
                if current.id == profile.id:
                    yield current, held
                    return
            profile = current
        raise Busy("the profile is being merged right now; retry")

    async def unmerge(self, tenant: str, profile_id: str, ids: list[str]) -> dict[str, Any]:
        """Split the named former profiles back out of the profile, with the events and
        sessions that came in under their ids, and the values they brought."""
        former_keys = [profile_lock_key(tenant, i) for i in ids]
        async with self._holding(tenant, profile_id, former_keys) as (survivor, held):
            restored: list[Profile] = []
            links: list[IdentityLink] = []
            for former_id in ids:
                retired = await self.profiles.retired(tenant, former_id)
                if retired is None or retired.survivor_id != survivor.id:
                    raise InvalidPayload(f"ids: {former_id!r} was not merged into {survivor.id!r}")
                former = retired.profile
                survivor = _take_back(survivor, former)
                former.metadata.time.update = utcnow()
                restored.append(former)
                links += [
                    IdentityLink(tenant, digest, former.id)
                    for digests in former.metadata.identity.values()
                    for digest in digests
                ]
            for profile in (survivor, *restored):
                await self._recount(profile)
            await self.visitors.commit(
                self.writer,
                ChangeSet(
                    profiles=[survivor, *restored],
                    identities=links,
                    restored=[(tenant, former.id) for former in restored],
                ),
                held=held,
                put_back=False,
            )
        return {"profile": {"id": survivor.id}, "restored": [{"id": p.id} for p in restored]}

    async def _recount(self, profile: Profile) -> None:
        # Counted from what is stored, all of it (a store whose searches lag refreshes first).
        events = await self.events.for_profiles(profile.tenant, profile.ids, limit=1, fresh=True)
        sessions = await self.sessions.for_profiles(
            profile.tenant, profile.ids, limit=1, fresh=True
        )
        profile.stats["events"] = events.total
        profile.stats["visits"] = sessions.total

    async def erase(self, tenant: str, profile_id: str, *, with_data: bool) -> dict[str, Any]:
        """Delete the profile and every id that resolved to it; with ``with_data`` also its
        sessions and events. Without it, they stay, anonymous, under ids nothing resolves."""
        async with self._holding(tenant, profile_id) as (profile, held):
            ids = tuple(dict.fromkeys([profile.id, *profile.ids]))
            # Remembered first: a browser that still holds one of these ids must never bring
            # the person back under it (should the erasure fail now, nothing is lost by this).
            await self.erased.remember(tenant, ids, utcnow())
            if with_data:
                erasure = ChangeSet(erasures=[Erasure(tenant, ids)])
            else:
                erasure = ChangeSet(
                    released_identities=_digests(tenant, profile),
                    erasures=[Erasure(tenant, ids, keep_records=True)],
                )
            await self.visitors.commit(self.writer, erasure, held=held)
        return {"deleted": list(ids), "with_data": with_data}

    async def anonymize(self, tenant: str, profile_id: str) -> Profile:
        """Remove what identifies the person; keep counts, segments and interests."""
        async with self._holding(tenant, profile_id) as (profile, held):
            released = _digests(tenant, profile)
            for part in PERSONAL_PARTS:
                setattr(profile, part, {})
            profile.metadata.identity = {}
            profile.metadata.merges = [
                {key: entry[key] for key in ("time", "merged_id") if key in entry}
                for entry in profile.metadata.merges
            ]
            profile.metadata.time.update = utcnow()
            await self.visitors.commit(
                self.writer,
                ChangeSet(profiles=[profile], released_identities=released),
                held=held,
                put_back=False,
            )
        return profile

    async def export(self, tenant: str, profile_id: str) -> dict[str, Any]:
        """Everything held about the person, as JSON-ready data. Events and sessions are read
        page by page to the end, however many there are (the stores page past Elasticsearch's
        10,000-hit window)."""
        profile = await self._current(tenant, profile_id)
        events = [
            msgspec.to_builtins(event)
            async for page in self.events.pages_for_profiles(tenant, profile.ids)
            for event in page
        ]
        sessions = [
            msgspec.to_builtins(session)
            async for page in self.sessions.pages_for_profiles(tenant, profile.ids)
            for session in page
        ]
        merged = []
        for former_id in profile.ids:
            retired = await self.profiles.retired(tenant, former_id)
            if retired is not None:
                merged.append(msgspec.to_builtins(retired.profile))
        return {
            "profile": msgspec.to_builtins(profile),
            "merged_profiles": merged,
            "sessions": sessions,
            "events": events,
            "exported": utcnow().isoformat(),
        }


def _digests(tenant: str, profile: Profile) -> list[tuple[str, str]]:
    return [
        (tenant, digest) for digests in profile.metadata.identity.values() for digest in digests
    ]


def _take_back(survivor: Profile, former: Profile) -> Profile:
    """The survivor without what the merge of ``former`` brought: its ids, its identity
    values, and the values the merge took from it (put back to the survivor's own)."""
    document = msgspec.to_builtins(survivor)
    former_ids = set(former.ids)
    document["ids"] = [i for i in document["ids"] if i not in former_ids]
    identity = document["metadata"]["identity"]
    for path, digests in former.metadata.identity.items():
        identity[path] = [d for d in identity.get(path, []) if d not in set(digests)]
    entry = next(
        (e for e in document["metadata"]["merges"] if e.get("merged_id") == former.id), None
    )
    if entry is not None:
        dropped = {c["path"]: c["dropped"] for c in entry.get("conflicts", [])}
        for path in entry.get("taken", []):
            if path in dropped:
                _set(document, path, dropped[path])
            elif read_path(msgspec.to_builtins(former), path) is not None:
                _delete(document, path)
        entry["unmerged"] = utcnow().isoformat()
    return msgspec.convert(document, Profile)


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    node = document
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _delete(document: dict[str, Any], path: str) -> None:
    node: Any = document
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)
