"""Segments: named groups of profiles, defined by a condition over the profile.

A profile is in a segment while ``condition`` holds for it; its ``segments`` list holds the ids
of the segments it is in. Membership is kept up to date live, whenever a request changes the
profile (only for requests carrying one of ``event_types`` when that list is not empty), and by
a re-segmentation job over every profile after a segment is created, edited or removed.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

# Internal events recording membership changes; properties: {"segment": id, "name": name}.
SEGMENT_ENTERED = "segment-entered"
SEGMENT_LEFT = "segment-left"
# The source named by internal events Tessera makes itself for segment membership.
SEGMENTATION_SOURCE = "tessera.segments"


class Segment(msgspec.Struct, kw_only=True):
    tenant: str
    # URL-safe: it travels in URLs and is what profiles list in ``segments``.
    id: str
    name: str
    created: datetime
    # Condition language, reading ``profile@…`` fields only.
    condition: str
    # Normalised event types; empty: evaluated on every change of a profile.
    event_types: list[str] = msgspec.field(default_factory=list)
    enabled: bool = True
    description: str = ""
    # Grows by one on each edit; cached parsed conditions are keyed by (id, version).
    version: int = 1
