"""A visit: the events one profile sent through one session id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from tessera.model.common import Ref


class SessionTime(msgspec.Struct):
    insert: datetime
    update: datetime


class SessionMetadata(msgspec.Struct):
    time: SessionTime
    channel: str | None = None


class Session(msgspec.Struct):
    id: str
    tenant: str
    profile: Ref | None
    metadata: SessionMetadata
    source: Ref | None = None
    events: int = 0
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    properties: dict[str, Any] = msgspec.field(default_factory=dict)


def new_session(
    session_id: str, tenant: str, profile: Ref | None, source: Ref, now: datetime
) -> Session:
    return Session(
        id=session_id,
        tenant=tenant,
        profile=profile,
        source=source,
        metadata=SessionMetadata(time=SessionTime(insert=now, update=now)),
    )
