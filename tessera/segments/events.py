"""The internal events that record a profile entering or leaving a segment.

One ``segment-entered`` / ``segment-left`` event per id, with properties
``{"segment": id, "name": name}``, the profile (and the session, when a request caused it),
status ``internal`` and ``metadata.internal`` (Tessera made it; no client sent it) and the
segmentation source.
"""

from __future__ import annotations

from datetime import datetime

from tessera.model.common import Ref, new_id
from tessera.model.event import Event, EventMetadata
from tessera.model.segment import SEGMENT_ENTERED, SEGMENT_LEFT, SEGMENTATION_SOURCE
from tessera.segments.membership import SegmentChange


def membership_events(
    tenant: str,
    profile_id: str,
    change: SegmentChange,
    now: datetime,
    *,
    session: Ref | None = None,
    source_id: str = SEGMENTATION_SOURCE,
) -> list[Event]:
    moves = [(SEGMENT_LEFT, i) for i in change.left] + [
        (SEGMENT_ENTERED, i) for i in change.entered
    ]
    return [
        Event(
            id=new_id(),
            tenant=tenant,
            type=event_type,
            time=now,
            metadata=EventMetadata(insert=now, status="internal", internal=True),
            source=Ref(source_id),
            session=session,
            profile=Ref(profile_id),
            properties={"segment": segment_id, "name": change.names.get(segment_id, segment_id)},
        )
        for event_type, segment_id in moves
    ]
