"""Turning incoming events into stored events with their metadata."""

from __future__ import annotations

from datetime import UTC, datetime

from tessera.model.common import Ref, new_id
from tessera.model.event import Event, EventMetadata
from tessera.pipeline.request import IncomingBatch, IncomingEvent


def build_event(
    batch: IncomingBatch,
    incoming: IncomingEvent,
    *,
    now: datetime,
    profile: Ref | None,
    session: Ref | None,
    request: str | None = None,
) -> Event:
    """``request``: the mark of the request storing it (model/applied.py)."""
    happened = incoming.time or now
    if happened.tzinfo is None:
        happened = happened.replace(tzinfo=UTC)
    context = {**batch.context, **incoming.context} if batch.context else incoming.context
    return Event(
        id=incoming.id or new_id(),
        tenant=batch.tenant,
        type=incoming.type,
        time=happened,
        metadata=EventMetadata(
            insert=now, ip=batch.client_ip, profile_less=batch.profile_less, request=request
        ),
        source=Ref(batch.source.id),
        session=session,
        profile=profile,
        properties=incoming.properties,
        context=context,
        options=incoming.options,
        tags=incoming.tags,
        request={"headers": batch.headers, "ip": batch.client_ip},
    )
