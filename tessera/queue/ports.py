"""The ingest queue port: what async intake publishes and ``tessera worker`` consumes.

Every backend (embedded SQLite log, Redis Streams, Kafka, Pulsar) keeps the same promises:

- ``publish`` returns only once the queue has durably kept every message (a fsynced SQLite
  commit, a Redis reply, a Kafka ``acks=all`` answer, a Pulsar send receipt). When it cannot, it
  raises ``QueueUnavailable`` and the API answers 503: no 200 for an event it did not keep.
- Messages are spread over a fixed number of partitions by their ``key`` (a profile id, or a
  session id when the visitor is anonymous). One partition is read by one consumer at a time, so
  one key's messages are handed out in publish order and never to two consumers at once.
- Delivery is at least once: a message that was fetched but not acknowledged (the worker
  crashed, or closed its consumer first) is delivered again, to this consumer or another one,
  in its original order. Workers make redelivery harmless (event ids are idempotency keys).
- What was acknowledged is never dropped before a worker processed it: retention (time and
  size) removes processed messages only. The unprocessed backlog is bounded by back-pressure
  instead: past its limit ``publish`` raises ``QueueFull`` (a QueueUnavailable, so a 503 with
  ``Retry-After``) and keeps nothing.
"""

from __future__ import annotations

import builtins
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from tessera.errors import StorageUnavailable


class QueueUnavailable(StorageUnavailable):
    """The queue did not acknowledge in time or is unreachable; retry later (503)."""

    public_message = "the ingest queue is unavailable; retry later"


class QueueFull(QueueUnavailable):
    """The unprocessed backlog is at its limit (TESSERA_QUEUE_MAX_BACKLOG_MB): nothing of this
    publish was kept; retry after ``retry_after`` seconds, once the workers caught up."""

    public_message = "the ingest queue is full; retry later"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        # An instance value shadows StorageUnavailable's class default of the Retry-After header.
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class QueueMessage:
    key: str
    body: bytes


@dataclass(slots=True)
class Delivery:
    """One fetched message. ``position`` is the backend's place for it within its partition
    (offsets grow in publish order); ``handle`` is whatever the backend needs to acknowledge it."""

    partition: int
    position: int
    key: str
    body: bytes
    # True when the backend knows this message was handed out before (redelivery).
    redelivered: bool = False
    handle: Any = None


@dataclass(frozen=True, slots=True)
class QueueRetention:
    """How long and how much of the *processed* (acknowledged) messages the queue keeps after
    the workers are done with them. Unprocessed messages are never removed by retention, on any
    backend: their bound is the backlog limit (``BacklogState``), enforced by refusing
    publishes."""

    hours: float
    megabytes: int


@dataclass(frozen=True, slots=True)
class BacklogState:
    """The unprocessed backlog as the publishing process sees it, against its limit.

    ``estimated_bytes`` is the last measurement (refreshed in the background, never per
    publish) plus what this process published since; ``refusals`` counts the publishes this
    process refused with QueueFull since it started (a per-process counter, as a metrics
    exporter would export it)."""

    limit_bytes: int
    estimated_bytes: int
    messages: int
    refusals: int
    # Seconds since the last successful measurement; None before the first one.
    measured_seconds_ago: float | None
    # Bytes per second the workers took off the backlog between the last two measurements.
    drain_bytes_per_second: float | None
    # False while this process's last publish was refused for the limit.
    accepting: bool = True


@dataclass(slots=True)
class PartitionStatus:
    partition: int
    # Messages published to the partition and not yet acknowledged by the consumers.
    backlog: int
    # Who reads it now (worker id, Kafka member, Pulsar consumer name), when the backend says.
    owner: str | None = None


@dataclass(slots=True)
class QueueStatus:
    backend: str
    topic: str
    partitions: builtins.list[PartitionStatus] = field(default_factory=list)
    # Anything the backend wants to show operators (retention applied, broker version …).
    details: dict[str, Any] = field(default_factory=dict)
    # The backlog against its limit as this process's publisher sees it.
    backpressure: BacklogState | None = None

    @property
    def backlog(self) -> int:
        return sum(partition.backlog for partition in self.partitions)


class QueueConsumer(Protocol):
    """One worker's reader. It owns some partitions (all of them when it is alone) and gives
    them back on ``close`` or when its owner stops renewing (crash)."""

    async def fetch(self, max_messages: int, wait_seconds: float) -> builtins.list[Delivery]:
        """Up to ``max_messages`` deliveries from partitions this consumer owns, in partition
        order; waits at most ``wait_seconds`` when there are none. A delivery that was fetched
        but not acknowledged is fetched again by the next call only after ``close`` or a
        crash; a consumer never hands the same unacknowledged message out twice itself."""
        ...

    async def ack(self, deliveries: builtins.list[Delivery]) -> None:
        """These deliveries are done: they are never delivered again to any consumer."""
        ...

    async def close(self) -> None: ...


class IngestQueue(Protocol):
    backend: str

    async def start(self) -> None:
        """Connect and make sure the topic (and its partitions) exists; QueueUnavailable when
        the queue cannot be reached."""
        ...

    async def publish(self, messages: builtins.list[QueueMessage]) -> None:
        """Durably keep every message, or raise QueueUnavailable (some may be kept anyway:
        the client's retry carries the same event ids, so it is harmless). QueueFull, kept
        nothing, when the unprocessed backlog would pass its limit; deciding that costs no
        round trip to the queue (the backlog is measured in the background)."""
        ...

    def consumer(self, worker_id: str) -> QueueConsumer:
        """A consumer in the one consumer group every worker shares."""
        ...

    async def status(self) -> QueueStatus: ...

    async def apply_retention(self, retention: QueueRetention) -> builtins.list[str]:
        """Set the retention of processed messages (on the broker, or trim by it) and make the
        broker keep unprocessed ones whatever happens; lines for the operator saying what was
        applied."""
        ...

    async def read_retention(self) -> QueueRetention | None:
        """The limits in force: those the broker holds for the topic (Pulsar: what
        ``apply_retention`` last set there, seen by every process), or those this object trims
        with (embedded, Redis, Kafka). None when the broker holds none it can state (not set,
        the topic missing, or unlimited)."""
        ...

    async def retention_risks(self) -> builtins.list[str]:
        """What in the broker's configuration or state could delete messages no worker has
        processed yet, each with what to change; empty when nothing can."""
        ...

    async def close(self) -> None: ...


def partition_of(key: str, partitions: int) -> int:
    """The partition a key goes to for backends that route by themselves (embedded, Redis);
    stable across processes and Python versions (``hash()`` is salted per process)."""
    return zlib.crc32(key.encode()) % partitions
