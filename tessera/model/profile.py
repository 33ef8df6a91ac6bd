"""The unified profile of one person."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import msgspec

from tessera.model.bounds import SAFE_INTEGER, bounded_sum, is_number, within

log = logging.getLogger(__name__)


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
    # Where a store cut in time partitions (Elasticsearch) keeps the record: its partition,
    # fixed at the first write and never moved, so a write goes straight there without a
    # search (storage/elastic/homes.py). None until stored there; SQLite leaves it alone.
    partition: str | None = None


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


def add_to_stat(
    profile: Profile, name: str, amount: int | float, limit: float = SAFE_INTEGER
) -> bool:
    """Add ``amount`` to a counter; False (the counter unchanged) when the sum would not be
    finite or would pass ``limit`` (see model/bounds.py)."""
    total = bounded_sum(profile.stats.get(name, 0), amount, limit)
    if total is None:
        return False
    profile.stats[name] = total
    return True


# --- Reading stored profiles ------------------------------------------------------------------
#
# A profile's ``stats`` and ``interests`` are typed (numbers only), so a stored profile in which
# one of them holds anything else cannot be decoded into a Profile. Versions before the bounds
# of model/bounds.py could store one: an infinite sum became JSON ``null``, and every read of
# that profile failed from then on. Reads therefore fall back to repairing such a profile: the
# entries that are not finite numbers are left out (their value was lost when it was stored as
# null), so the profile can be read, exported, erased and counted from again.

_NUMERIC_PARTS = ("stats", "interests")
_decode_typed = msgspec.json.Decoder(Profile).decode
_decode_plain = msgspec.json.Decoder().decode


def _repaired(document: Any) -> bool:
    """Drop what typed number maps cannot hold; True when something was dropped."""
    if not isinstance(document, dict):
        return False
    dropped = False
    for part in _NUMERIC_PARTS:
        numbers = document.get(part)
        if numbers is None:
            continue
        if not isinstance(numbers, dict):
            document[part] = {}
            dropped = True
            continue
        for key in [k for k, v in numbers.items() if not (is_number(v) and within(v, 1e308))]:
            del numbers[key]
            dropped = True
    return dropped


def profile_from_json(raw: bytes | str) -> Profile:
    """A stored profile (JSON), repaired when its numbers cannot be read (see above)."""
    try:
        return _decode_typed(raw)
    except msgspec.ValidationError:
        document = _decode_plain(raw)
        if not _repaired(document):
            raise
        return _after_repair(document)


def profile_from_builtins(document: dict[str, Any]) -> Profile:
    """A profile from plain JSON values (an Elasticsearch ``_source``), repaired likewise."""
    try:
        return msgspec.convert(document, Profile)
    except msgspec.ValidationError:
        if not _repaired(document):
            raise
        return _after_repair(document)


def _after_repair(document: dict[str, Any]) -> Profile:
    profile = msgspec.convert(document, Profile)
    log.warning(
        "profile %r held numbers that are not finite (stored by an older version); "
        "they were left out when it was read",
        profile.id,
    )
    return profile
