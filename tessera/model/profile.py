"""The unified profile of one person."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class ProfileTime(msgspec.Struct):
    insert: datetime
    update: datetime
    last_visit: datetime | None = None


class ProfileMetadata(msgspec.Struct):
    time: ProfileTime
    # Salted hashes of the merge-key values this profile holds, per profile path: the same
    # hashes the identity index maps to this profile.
    identity: dict[str, list[str]] = msgspec.field(default_factory=dict)
    # One entry per profile merged into this one: when, which, and what conflicted.
    merges: list[dict[str, Any]] = msgspec.field(default_factory=list)
    # Marks of the last requests this profile took in (model/applied.py): apply once.
    applied: list[str] = msgspec.field(default_factory=list)


def new_stats() -> dict[str, int | float]:
    # visits: distinct sessions the person was seen in (each counts once, merged or not).
    return {"visits": 0, "events": 0}


class Profile(msgspec.Struct):
    id: str
    tenant: str
    metadata: ProfileMetadata
    # Every id that resolves to this profile, its own included (merged profiles add theirs).
    ids: list[str] = msgspec.field(default_factory=list)
    stats: dict[str, int | float] = msgspec.field(default_factory=new_stats)
    traits: dict[str, Any] = msgspec.field(default_factory=dict)
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    segments: list[str] = msgspec.field(default_factory=list)
    interests: dict[str, float] = msgspec.field(default_factory=dict)
    consents: dict[str, Any] = msgspec.field(default_factory=dict)
    active: bool = True


def new_profile(profile_id: str, tenant: str, now: datetime) -> Profile:
    return Profile(
        id=profile_id,
        tenant=tenant,
        metadata=ProfileMetadata(time=ProfileTime(insert=now, update=now)),
        ids=[profile_id],
    )


def add_to_stat(profile: Profile, name: str, amount: int | float) -> None:
    profile.stats[name] = profile.stats.get(name, 0) + amount
