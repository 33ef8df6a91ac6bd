"""Back-pressure for the ingest queue: refuse a publish before the unprocessed backlog passes
its limit, without asking the queue anything on the publish path.

Retention never removes what no worker has processed, so the backlog is bounded here instead:
each publishing process holds a ``BacklogGate``. A background task measures the backlog (the
backend's ``measure``: a few cheap calls, e.g. end offsets minus the group's committed offsets)
every second, or less often when measuring is slow; ``admit`` compares the last measurement
plus everything this process published since against the limit, in memory. Bytes published
during a measurement are counted on top of it, so the estimate errs high, never low.

Backends that count messages but not bytes (Kafka offsets, Redis stream lag, the embedded log's
rows) get bytes as messages times the average size this process publishes (key, body and a rough
per-message overhead of the broker's framing).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tessera.queue.ports import BacklogState, QueueFull, QueueMessage

log = logging.getLogger(__name__)

# Bytes a queue spends on one message beside its key and body (record headers, offsets, ids);
# rough on purpose: the limit protects a disk, it is not an exact quota.
MESSAGE_OVERHEAD = 64
# Retry-After bounds, and the answer while no worker is draining the backlog.
MIN_RETRY_AFTER_S = 1
MAX_RETRY_AFTER_S = 60
IDLE_RETRY_AFTER_S = 10
# The refusal lifts at the limit; the client is told to come back once this share is free.
RESUME_SHARE = 0.9
# A slow measurement (a huge embedded log, a far broker) spaces the next ones out to keep the
# background cost near a tenth of one core at most.
SLOW_MEASURE_FACTOR = 10
# A status report older than this measures anew (not the publish path: it never waits).
STALE_FOR_STATUS_S = 5.0


@dataclass(frozen=True, slots=True)
class Backlog:
    """One measurement: unprocessed messages, and their bytes when the backend knows them."""

    messages: int
    bytes: int | None = None


Measure = Callable[[], Awaitable[Backlog]]


def message_bytes(messages: builtins.list[QueueMessage]) -> int:
    return sum(len(m.key) + len(m.body) + MESSAGE_OVERHEAD for m in messages)


class BacklogGate:
    def __init__(
        self,
        *,
        limit_bytes: int,
        measure: Measure,
        what: str,
        interval_s: float = 1.0,
        first_wait_s: float = 2.0,
    ) -> None:
        self.limit_bytes = limit_bytes
        self._measure = measure
        self._what = what
        self._interval_s = interval_s
        self._first_wait_s = first_wait_s
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Event | None = None
        # Everything this process reserved (published or about to), for the average size and
        # for what came after a measurement.
        self._sent_bytes = 0
        self._sent_messages = 0
        self._measured: Backlog | None = None
        self._measured_bytes = 0
        self._measured_at: float | None = None
        # _sent_bytes when the last measurement started: what came after is on top of it.
        self._mark = 0
        self._drain_rate: float | None = None
        self.refusals = 0
        self._refusing = False
        self._failing = False

    async def admit(self, messages: builtins.list[QueueMessage]) -> None:
        """Reserve room for ``messages`` or raise QueueFull. Waits only on the first call of a
        process, for the first measurement (at most ``first_wait_s``)."""
        size = message_bytes(messages)
        self._ensure_running()
        if self._measured_at is None and self._first is not None:
            try:
                await asyncio.wait_for(self._first.wait(), self._first_wait_s)
            except TimeoutError:
                log.warning("%s: no backlog measurement yet; publishing unchecked", self._what)
        estimate = self._estimate(extra_messages=len(messages), extra_bytes=size)
        if estimate + size > self.limit_bytes:
            self.refused()
            raise QueueFull(
                f"{self._what}: the unprocessed backlog is at its limit "
                f"({_mb(estimate)} of {_mb(self.limit_bytes)} MB, TESSERA_QUEUE_MAX_BACKLOG_MB); "
                "retry once the workers caught up",
                retry_after=self._retry_after(estimate + size),
            )
        self._refusing = False
        self._sent_bytes += size
        self._sent_messages += len(messages)

    def refused(self) -> None:
        """Count a refusal (also one the broker made itself, Pulsar's backlog quota)."""
        self.refusals += 1
        self._refusing = True

    def state(self) -> BacklogState:
        messages = 0 if self._measured is None else self._measured.messages
        return BacklogState(
            limit_bytes=self.limit_bytes,
            estimated_bytes=self._estimate(),
            messages=messages,
            refusals=self.refusals,
            measured_seconds_ago=(
                None if self._measured_at is None else time.monotonic() - self._measured_at
            ),
            drain_bytes_per_second=self._drain_rate,
            accepting=not self._refusing,
        )

    async def observed(self) -> BacklogState:
        """The state for a status report: measured now when this process has no recent
        measurement of its own (a process that never published, e.g. `tessera queue status`)."""
        recent = self._measured_at is not None and (
            time.monotonic() - self._measured_at < STALE_FOR_STATUS_S
        )
        if not recent:
            await self.refresh()
        return self.state()

    async def refresh(self) -> None:
        """Measure once now (the background task's step; tests call it to skip the wait)."""
        mark = self._sent_bytes
        found = await self._measure()
        now = time.monotonic()
        found_bytes = self._bytes_of(found)
        if self._measured_at is not None and now > self._measured_at:
            drained = self._measured_bytes + (mark - self._mark) - found_bytes
            self._drain_rate = max(0.0, drained / (now - self._measured_at))
        self._measured, self._measured_bytes = found, found_bytes
        self._measured_at, self._mark = now, mark
        if self._first is not None:
            self._first.set()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _ensure_running(self) -> None:
        if self._task is None:
            self._first = asyncio.Event()
            self._task = asyncio.create_task(self._forever(), name=f"backlog {self._what}")

    async def _forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
                if self._failing:
                    log.warning("%s: measuring the backlog works again", self._what)
                self._failing = False
            except Exception as exc:  # noqa: BLE001 - a background loop's last-resort boundary
                # The publish itself reports an unreachable queue; the estimate keeps growing
                # with what is published meanwhile, so a blind gate errs toward refusing.
                if not self._failing:
                    log.warning("%s: measuring the backlog failed: %r", self._what, exc)
                self._failing = True
            took = time.monotonic() - started
            await asyncio.sleep(max(self._interval_s, took * SLOW_MEASURE_FACTOR))

    def _average(self, extra_messages: int = 0, extra_bytes: int = 0) -> float:
        messages = self._sent_messages + extra_messages
        return (self._sent_bytes + extra_bytes) / messages if messages else 0.0

    def _bytes_of(self, found: Backlog) -> int:
        if found.bytes is not None:
            return found.bytes
        return round(found.messages * self._average())

    def _estimate(self, extra_messages: int = 0, extra_bytes: int = 0) -> int:
        if self._measured is None:
            return self._sent_bytes - self._mark
        measured = self._measured_bytes
        if self._measured.bytes is None and self._sent_messages == 0:
            # Nothing published here yet to know the size by: the first batch's average.
            measured = round(self._measured.messages * self._average(extra_messages, extra_bytes))
        return measured + self._sent_bytes - self._mark

    def _retry_after(self, wanted: int) -> int:
        if not self._drain_rate:
            return IDLE_RETRY_AFTER_S
        excess = wanted - self.limit_bytes * RESUME_SHARE
        seconds = math.ceil(excess / self._drain_rate)
        return max(MIN_RETRY_AFTER_S, min(MAX_RETRY_AFTER_S, seconds))


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}"
