"""The lock keys of the records a request changes: one name per session, profile and merge-key
value, so every code path that changes one of them serialises on the same key."""

from __future__ import annotations


def session_lock_key(tenant: str, session_id: str) -> str:
    return f"s\x00{tenant}\x00{session_id}"


def profile_lock_key(tenant: str, profile_id: str) -> str:
    return f"p\x00{tenant}\x00{profile_id}"


def identity_lock_key(tenant: str, digest: str) -> str:
    return f"i\x00{tenant}\x00{digest}"
