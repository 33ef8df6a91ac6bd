"""Taking in history: events with their own times, through the same ingest as /track.

An import goes through ``Ingestor.ingest`` rather than writing records itself, so every
guarantee of the live path holds for it: per-profile locks, apply-once marks, insert-once
events (a second import of the same events stores and counts nothing), identity and merges,
validation, reshaping and the event-to-profile mapping. What differs (``IncomingBatch.history``):

- a batch is taken in as of its events' own times: a profile or session it creates is first
  seen at its first event, last seen at its last, and its events are filed (partitioned) by
  their own time;
- no live automation runs: rules, workflows, segment events and destinations react to what
  happens now; replaying years of history into them would send e-mails and webhooks for
  things long past. Segments are recomputed by their job (segments/job.py).

Events are grouped per visitor (profile id, else session id) and applied in time order, a
visitor at a time, in batches of one session each that never span a gap longer than a visit
(so visit numbers come out as live traffic would have made them). Visitors are independent,
so several are taken in at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from tessera.errors import StorageUnavailable
from tessera.model.common import DEFAULT_TENANT
from tessera.model.source import EventSource
from tessera.pipeline.request import IncomingBatch, IncomingEvent, IngestResult

# Events of one ingest batch: as many as a /track request may carry at most by default.
BATCH_EVENTS = 200
# Visitors taken in at once: enough to keep the writer's group commit full.
PARALLEL_VISITORS = 32
# Attempts of one batch through a passing outage (0.1 s, 0.2 s, … apart: 6 s in all).
PATIENCE = 7


@dataclass(slots=True)
class HistoryEvent:
    """One imported event: the event, and the visitor it belongs to as the file names it."""

    event: IncomingEvent
    profile_id: str | None = None
    session_id: str | None = None

    @property
    def visitor(self) -> str:
        """Events of one visitor are applied in order, one batch at a time."""
        if self.profile_id is not None:
            return f"p\x00{self.profile_id}"
        if self.session_id is not None:
            return f"s\x00{self.session_id}"
        return ""  # profile-less: no visitor, no order


@dataclass(slots=True)
class ImportCounts:
    stored: int = 0
    # Events stored before (an earlier import, or this one before it was interrupted).
    duplicates: int = 0
    # Events refused, by reason (a time outside the bounds, model/event_time.py).
    refused: Counter[str] = field(default_factory=Counter)
    visitors: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "stored": self.stored,
            "duplicates": self.duplicates,
            "refused": dict(self.refused),
            "visitors": self.visitors,
        }


Ingest = Callable[[IncomingBatch], Awaitable[IngestResult]]


class HistoryImporter:
    def __init__(self, ingest: Ingest, *, close_visit_after: timedelta) -> None:
        self._ingest = ingest
        self._close_visit_after = close_visit_after

    async def take_in(
        self, source: EventSource, events: Iterable[HistoryEvent], counts: ImportCounts
    ) -> None:
        by_visitor: dict[str, list[HistoryEvent]] = {}
        for item in events:
            by_visitor.setdefault(item.visitor, []).append(item)
        counts.visitors += len([key for key in by_visitor if key])
        gate = asyncio.Semaphore(PARALLEL_VISITORS)

        async def one(key: str, items: list[HistoryEvent]) -> None:
            async with gate:
                for batch in self._batches(source, key, items):
                    result = await self._ingest_patiently(batch)
                    counts.stored += len(result.event_ids)
                    counts.duplicates += len(batch.events) - len(result.event_ids)

        await asyncio.gather(*(one(key, items) for key, items in by_visitor.items()))

    async def _ingest_patiently(self, batch: IncomingBatch) -> IngestResult:
        """The batch, tried again on a passing outage: an import files into partitions that
        live traffic has not created yet, and a partition answers reads only once its shards
        have started. Trying again is safe (the batch's apply-once mark) and keeps the
        request's counts exact; a longer outage fails the request (503) and the CLI sends it
        again later."""
        for attempt in range(PATIENCE - 1):
            try:
                return await self._ingest(batch)
            except StorageUnavailable:
                await asyncio.sleep(0.1 * 2**attempt)
        return await self._ingest(batch)

    def _batches(
        self, source: EventSource, key: str, items: list[HistoryEvent]
    ) -> list[IncomingBatch]:
        # Sorted by time, then id: the same file always makes the same batches, so a batch
        # sent again after an interruption carries the same apply-once mark (its first id).
        items.sort(key=lambda item: (item.event.time is None, item.event.time, item.event.id))
        batches: list[IncomingBatch] = []
        current: list[HistoryEvent] = []
        for item in items:
            if current and not self._same_batch(current, item):
                batches.append(_batch(source, key, current))
                current = []
            current.append(item)
        if current:
            batches.append(_batch(source, key, current))
        return batches

    def _same_batch(self, current: list[HistoryEvent], item: HistoryEvent) -> bool:
        last = current[-1]
        if len(current) >= BATCH_EVENTS or item.session_id != last.session_id:
            return False
        if item.event.time is None or last.event.time is None:
            return True
        return item.event.time - last.event.time <= self._close_visit_after


def _batch(source: EventSource, key: str, items: list[HistoryEvent]) -> IncomingBatch:
    first = items[0]
    return IncomingBatch(
        tenant=DEFAULT_TENANT,
        source=source,
        events=[item.event for item in items],
        profile_less=not key,
        session_id=first.session_id,
        profile_id=first.profile_id,
        history=True,
    )
