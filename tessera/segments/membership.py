"""Deciding, for one profile document, which segments it enters and leaves.

Pure functions shared by live segmentation (ingest) and the re-segmentation job. Only the ids
of the segments given are touched: anything else in ``profile["segments"]`` (an id a workflow
added by hand, a segment that is not evaluated now) stays as it is.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.query import Condition, evaluate


@dataclass(frozen=True, slots=True)
class LiveSegment:
    """An enabled segment with its condition parsed, ready to evaluate."""

    id: str
    name: str
    version: int
    condition: Condition
    # Empty: evaluated on every change of a profile.
    event_types: frozenset[str]

    def applies_to(self, event_types: Collection[str]) -> bool:
        return not self.event_types or any(t in self.event_types for t in event_types)


@dataclass(slots=True)
class SegmentChange:
    """Segment ids the profile entered and left, and the name of each (for the
    ``segment-entered`` / ``segment-left`` events, without another lookup)."""

    entered: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.entered or self.left)


def update_membership(
    profile: dict[str, Any],
    segments: Iterable[LiveSegment],
    *,
    remove: Collection[str] = (),
    names: Mapping[str, str] | None = None,
) -> SegmentChange:
    """Evaluate ``segments`` on the profile document and take the ids in ``remove`` out of it
    (segments disabled or deleted); update ``profile["segments"]`` in place.

    Every condition sees the document as it was before this call, so the result does not depend
    on the order of the segments (a condition reading ``profile@segments`` sees the old list).
    """
    current = profile.get("segments")
    members: list[str] = (
        [m for m in current if isinstance(m, str)] if isinstance(current, list) else []
    )
    held = set(members)
    change = SegmentChange()
    scope = {"profile": profile}
    for segment in segments:
        inside = evaluate(segment.condition, scope)
        if inside and segment.id not in held:
            change.entered.append(segment.id)
            change.names[segment.id] = segment.name
        elif not inside and segment.id in held:
            change.left.append(segment.id)
            change.names[segment.id] = segment.name
    for segment_id in remove:
        if segment_id in held and segment_id not in change.names:
            change.left.append(segment_id)
            change.names[segment_id] = (names or {}).get(segment_id, segment_id)
    if change:
        gone = set(change.left)
        profile["segments"] = [m for m in members if m not in gone] + change.entered
    return change
