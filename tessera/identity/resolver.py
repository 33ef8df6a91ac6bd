"""Finding which profiles a request's merge-key values join, and merging them.

Used by the ingest pipeline under the locks of every profile and identity value involved (see
pipeline/ingest.py); nothing here takes locks itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from tessera.identity.keys import KeyValue, key_values, read_path
from tessera.identity.merge import merge_documents
from tessera.model.bounds import DEFAULT_LIMITS, ProfileLimits
from tessera.model.profile import Profile
from tessera.storage.ports import IdentityLink, ProfileStore, RetiredProfile, SessionStore

_to_profile = msgspec.convert


@dataclass(frozen=True, slots=True)
class IdentityPolicy:
    enabled: bool
    salt: str
    paths: tuple[str, ...]
    blocked: frozenset[str]
    per_key_limit: int
    # Bounds a merged profile must stay within (model/bounds.py): else MergeRefused.
    limits: ProfileLimits = DEFAULT_LIMITS


@dataclass
class IdentityChanges:
    """What a profile's new merge-key values mean: links to add, owners to merge with."""

    new_values: list[KeyValue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Profiles (by id) that already hold one of the new values.
    owners: set[str] = field(default_factory=set)


class IdentityResolver:
    def __init__(
        self, policy: IdentityPolicy, profiles: ProfileStore, sessions: SessionStore
    ) -> None:
        self.policy = policy
        self._profiles = profiles
        self._sessions = sessions

    def new_values(
        self,
        profile: Profile,
        document: dict[str, Any],
        before: Mapping[str, Any],
        *,
        replace: bool = True,
    ) -> tuple[list[KeyValue], list[str]]:
        """Merge-key values the document holds that the profile is not indexed under yet.

        A value that would take a key past its limit is refused: the document's field is put
        back to ``before`` (its value before this request) and a warning says why. Without
        ``replace`` (a public request) a field that held a value before is not changed at all.
        """
        if not self.policy.enabled or not self.policy.paths:
            return [], []
        # Only values this request changed can be new: most requests change none, and then
        # no value is normalised or hashed at all.
        changed = tuple(
            path for path in self.policy.paths if read_path(document, path) != before.get(path)
        )
        if not changed:
            return [], []
        kept_warnings: list[str] = []
        if not replace:
            held = [path for path in changed if before.get(path) is not None]
            for path in held:
                _restore(document, path, before.get(path))
                kept_warnings.append(
                    f"{path}: a public request does not replace an identifier the profile holds"
                )
            changed = tuple(path for path in changed if path not in held)
            if not changed:
                return [], kept_warnings
        values, warnings = key_values(
            document, changed, salt=self.policy.salt, extra_blocked=self.policy.blocked
        )
        known = profile.metadata.identity
        fresh: list[KeyValue] = []
        for value in values:
            held = known.get(value.path, [])
            if value.digest in held or any(v.digest == value.digest for v in fresh):
                continue
            count = len(held) + sum(1 for v in fresh if v.path == value.path)
            if count >= self.policy.per_key_limit:
                _restore(document, value.path, before.get(value.path))
                warnings.append(
                    f"{value.path}: the profile already holds {self.policy.per_key_limit} "
                    "values of this key; the new one was not taken"
                )
                continue
            fresh.append(value)
        return fresh, kept_warnings + warnings

    async def owners_of(
        self, tenant: str, values: list[KeyValue], profile_id: str
    ) -> dict[str, str]:
        """The profiles other than ``profile_id`` the identity index gives these values to:
        digest → profile id."""
        found = await self._profiles.owners(tenant, [value.digest for value in values])
        return {digest: owner for digest, owner in found.items() if owner != profile_id}

    def without_values(
        self, profile: Profile, values: list[KeyValue], before: Mapping[str, Any]
    ) -> Profile:
        """The profile with the fields of ``values`` put back as they were ``before``."""
        document = msgspec.to_builtins(profile)
        for path in dict.fromkeys(value.path for value in values):
            _restore(document, path, before.get(path))
        return _to_profile(document, Profile)

    def links(self, profile: Profile, values: list[KeyValue]) -> list[IdentityLink]:
        """Index the values under the profile, and remember them on the profile."""
        for value in values:
            held = profile.metadata.identity.setdefault(value.path, [])
            if value.digest not in held:
                held.append(value.digest)
        return [IdentityLink(profile.tenant, value.digest, profile.id) for value in values]

    async def merge(
        self,
        first: Profile,
        second: Profile,
        now: datetime,
        sessions_pending: int,
        *,
        request: str | None = None,
    ) -> tuple[Profile, RetiredProfile, list[IdentityLink]]:
        """Merge two profiles; the older one survives. ``sessions_pending`` counts sessions of
        this request not stored yet, so the recounted visits include them. ``request``: the
        mark of the request merging (model/applied.py), kept in the merge log so a retry of
        it can finish a merge whose commit was cut short."""
        survivor, loser = sorted((first, second), key=lambda p: (p.metadata.time.insert, p.id))
        document, log = merge_documents(
            msgspec.to_builtins(survivor), msgspec.to_builtins(loser), self.policy.limits
        )
        merged = _to_profile(document, Profile)
        stored_sessions = await self._sessions.for_profiles(
            survivor.tenant, merged.ids, limit=1, fresh=True
        )
        merged.stats["visits"] = stored_sessions.total + sessions_pending
        merged.metadata.time.update = now
        merged.metadata.merges.append(
            {
                "time": now.isoformat(),
                "merged_id": loser.id,
                "merged_ids": list(loser.ids),
                "conflicts": log.conflicts,
                "taken": log.taken,
                **({"request": request} if request is not None else {}),
            }
        )
        links = self.loser_links(loser, survivor.id)
        return merged, RetiredProfile(profile=loser, survivor_id=survivor.id), links

    @staticmethod
    def loser_links(loser: Profile, survivor_id: str) -> list[IdentityLink]:
        """The merged-away profile's values, pointing at the survivor."""
        return [
            IdentityLink(loser.tenant, digest, survivor_id)
            for digests in loser.metadata.identity.values()
            for digest in digests
        ]


def _restore(document: dict[str, Any], path: str, previous: Any) -> None:
    parts = path.split(".")
    node = document
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            return
        node = child
    if previous is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = previous


def snapshot_paths(document: Mapping[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``paths`` before a request changes the document."""
    return {path: read_path(document, path) for path in paths}
