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


class ProfileStats(msgspec.Struct):
    # Distinct sessions this profile has been seen in; each session counts once.
    visits: int = 0
    events: int = 0


class Profile(msgspec.Struct):
    id: str
    tenant: str
    metadata: ProfileMetadata
    # Every id that resolves to this profile, its own included (merged profiles add theirs).
    ids: list[str] = msgspec.field(default_factory=list)
    stats: ProfileStats = msgspec.field(default_factory=ProfileStats)
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
