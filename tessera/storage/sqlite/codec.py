"""Record ⇄ row conversion for the embedded store."""

from __future__ import annotations

import msgspec

from tessera.model.event import Event
from tessera.model.profile import Profile, profile_from_json
from tessera.model.session import Session

_encode_bytes = msgspec.json.Encoder().encode


def encode(value: object) -> str:
    # Stored as TEXT, not BLOB: SQLite's JSON functions (used by search) read TEXT only.
    return _encode_bytes(value).decode()


decode_event = msgspec.json.Decoder(Event).decode
decode_profile = profile_from_json
decode_session = msgspec.json.Decoder(Session).decode

EventRow = tuple[str, str, str, float, float, str | None, str | None, str, str]
SessionRow = tuple[str, str, str | None, float, str]
ProfileRow = tuple[str, str, float, str]


def event_row(event: Event) -> EventRow:
    return (
        event.tenant,
        event.id,
        event.type,
        event.time.timestamp(),
        event.metadata.insert.timestamp(),
        event.profile.id if event.profile else None,
        event.session.id if event.session else None,
        event.source.id,
        encode(event),
    )


def session_row(session: Session) -> SessionRow:
    return (
        session.tenant,
        session.id,
        session.profile.id if session.profile else None,
        session.metadata.time.update.timestamp(),
        encode(session),
    )


def profile_row(profile: Profile) -> ProfileRow:
    return (
        profile.tenant,
        profile.id,
        profile.metadata.time.update.timestamp(),
        encode(profile),
    )
