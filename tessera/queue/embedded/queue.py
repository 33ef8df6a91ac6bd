"""The embedded ingest queue: a durable log in one SQLite file (``<TESSERA_DATA_DIR>/queue.db``),
the default queue of Tessera.

``publish`` returns once its rows are committed with ``synchronous=FULL`` in WAL mode; a single
writer thread commits every publisher that queued meanwhile in one transaction (group commit,
``queue_publisher.py``). Consumers lease partitions in the same file (``queue_consumer.py``), so
the API process and ``tessera worker`` processes share it. Each message's seq is its position.

The log belongs to the installation, not to a tenant: rows carry no tenant column, the message
body says which tenant an event is for.

Retention removes acknowledged messages only (older than the hours, then the oldest while the
file holds more than the megabytes); unacknowledged ones stay whatever the limits say. ``trim``
applies the retention last given to ``apply_retention``, or the one given at construction
(720 h / 1024 MB by default), so a housekeeping loop can call it without knowing the settings.
The unacknowledged backlog is bounded by back-pressure instead: ``publish`` raises QueueFull
before it would pass ``max_backlog_mb`` (``queue_backlog.BacklogGate``; the rows are counted on
the log's index every second in the background).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from pathlib import Path

from tessera.queue.backlog import Backlog, BacklogGate
from tessera.queue.embedded import log as queue_log
from tessera.queue.embedded.consumer import SqliteQueueConsumer, StateThread
from tessera.queue.embedded.publisher import LogPublisher
from tessera.queue.ports import (
    PartitionStatus,
    QueueConsumer,
    QueueMessage,
    QueueRetention,
    QueueStatus,
    QueueUnavailable,
    partition_of,
)

DEFAULT_RETENTION = QueueRetention(hours=720, megabytes=1024)


class SqliteIngestQueue:
    backend = "embedded"

    def __init__(
        self,
        path: Path,
        *,
        topic: str = "tessera-ingest",
        partitions: int = 8,
        lease_seconds: float = 10.0,
        publish_timeout_seconds: float = 5.0,
        retention: QueueRetention = DEFAULT_RETENTION,
        max_backlog_mb: int = 1024,
    ) -> None:
        self.path = path
        self.topic = topic
        self._partitions = partitions
        self._lease = lease_seconds
        self._publish_timeout = publish_timeout_seconds
        self._retention = retention
        self._publisher: LogPublisher | None = None
        self._state: StateThread | None = None
        self._consumers: set[SqliteQueueConsumer] = set()
        # Fetches of this process waiting for messages: a publish here wakes them at once.
        self._waiting: set[asyncio.Future[None]] = set()
        self._closed = False
        self.backlog_gate = BacklogGate(
            limit_bytes=max_backlog_mb * 1024 * 1024,
            measure=self._measure_backlog,
            what=f"embedded queue {path}",
        )

    @property
    def commits(self) -> int:
        """Transactions the writer committed: with group commit, far fewer than publishes."""
        return 0 if self._publisher is None else self._publisher.commits

    async def start(self) -> None:
        if self._closed:
            raise QueueUnavailable("the embedded queue is closed")
        if self._publisher is not None:
            return
        publisher = LogPublisher(self.path, self._partitions)
        await asyncio.to_thread(publisher.start)
        self._publisher = publisher
        self._state = StateThread(self.path)

    async def publish(self, messages: builtins.list[QueueMessage]) -> None:
        if not messages:
            return
        if self._publisher is None:
            raise QueueUnavailable("the embedded queue is not running")
        await self.backlog_gate.admit(messages)
        now = time.time()
        rows = [(partition_of(m.key, self._partitions), m.key, m.body, now) for m in messages]
        committed = self._publisher.submit(rows)
        try:
            await asyncio.wait_for(committed, self._publish_timeout)
        except TimeoutError:
            raise QueueUnavailable(
                f"the embedded queue did not commit within {self._publish_timeout:g} s"
            ) from None
        self._wake_waiting()

    def consumer(self, worker_id: str) -> QueueConsumer:
        consumer = SqliteQueueConsumer(
            self._running_state(),
            worker_id,
            partitions=self._partitions,
            lease_seconds=self._lease,
            wait_for_publish=self._wait_for_publish,
            on_close=self._consumers.discard,
        )
        self._consumers.add(consumer)
        return consumer

    async def status(self) -> QueueStatus:
        rows = await self._running_state().run(queue_log.partition_rows)
        now = time.time()
        return QueueStatus(
            backend=self.backend,
            topic=self.topic,
            partitions=[
                PartitionStatus(p, backlog, owner if expires > now else None)
                for p, backlog, owner, expires in rows
            ],
            details={
                "path": str(self.path),
                "lease_seconds": self._lease,
                "retention_hours": self._retention.hours,
                "retention_mb": self._retention.megabytes,
            },
            backpressure=await self.backlog_gate.observed(),
        )

    async def _measure_backlog(self) -> Backlog:
        count = await self._running_state().run(queue_log.unacknowledged)
        return Backlog(messages=count)

    async def apply_retention(self, retention: QueueRetention) -> builtins.list[str]:
        self._retention = retention
        removed = await self.trim()
        return [
            f"embedded log: keeps acknowledged messages {retention.hours:g} h /"
            f" {retention.megabytes} MB; {removed} removed",
            "embedded log: unacknowledged messages are kept whatever the limits",
        ]

    async def retention_risks(self) -> builtins.list[str]:
        """None: ``trim`` removes acknowledged messages only (the contract suite checks it)."""
        return []

    async def read_retention(self) -> QueueRetention:
        """What ``trim`` removes by: the construction's retention (the settings, as the queue
        factory builds it) until ``apply_retention`` gives another."""
        return self._retention

    async def trim(self) -> int:
        """Remove acknowledged messages beyond the current retention; how many went."""
        older_than = time.time() - self._retention.hours * 3600
        budget = self._retention.megabytes * 1024 * 1024
        return await self._running_state().run(
            lambda connection: queue_log.trim(
                connection, older_than=older_than, budget_bytes=budget
            )
        )

    async def close(self) -> None:
        self._closed = True
        await self.backlog_gate.close()
        for consumer in list(self._consumers):
            # A clean shutdown gives the partitions back; if that fails they expire instead.
            with contextlib.suppress(QueueUnavailable):
                await consumer.close()
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await asyncio.to_thread(publisher.stop)
        state, self._state = self._state, None
        if state is not None:
            await state.close()
        self._wake_waiting()

    def _running_state(self) -> StateThread:
        if self._state is None:
            raise QueueUnavailable("the embedded queue is not running")
        return self._state

    async def _wait_for_publish(self, seconds: float) -> None:
        published: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.add(published)
        try:
            await asyncio.wait_for(published, seconds)
        except TimeoutError:
            pass
        finally:
            self._waiting.discard(published)

    def _wake_waiting(self) -> None:
        for waiting in list(self._waiting):
            # Thread-safe even for this loop, and a closed loop has no fetch left to wake.
            with contextlib.suppress(RuntimeError):
                waiting.get_loop().call_soon_threadsafe(_wake, waiting)


def _wake(waiting: asyncio.Future[None]) -> None:
    if not waiting.done():
        waiting.set_result(None)
