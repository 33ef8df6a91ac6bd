"""A visit: the events one profile sent through one session id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from tessera.model.common import Ref


class SessionTime(msgspec.Struct):
    insert: datetime
    update: datetime


class Visit(msgspec.Struct):
    """One visit within a session: it ends after CLOSE_VISIT_AFTER seconds without events,
    and the session's next event starts the next one."""

    number: int
    start: datetime
    last: datetime


class SessionMetadata(msgspec.Struct):
    time: SessionTime
    channel: str | None = None
    visit: Visit | None = None
    # Marks of the last requests this session took in (model/applied.py): apply once.
    applied: list[str] = msgspec.field(default_factory=list)
    # The partition an Elasticsearch store keeps the session in (see ProfileMetadata).
    partition: str | None = None


class Session(msgspec.Struct):
    id: str
    tenant: str
    profile: Ref | None
    metadata: SessionMetadata
    source: Ref | None = None
    events: int = 0
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    # What the first request of the session tells about the visitor: device, operating
    # system, browser, bot or not, UTM tags, referrer, time zone.
    device: dict[str, Any] = msgspec.field(default_factory=dict)


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
