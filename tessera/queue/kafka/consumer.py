"""One worker's reader of the Kafka topic: a member of the workers' consumer group.

Kafka keeps one committed offset per partition, not an acknowledgement per message, so the
consumer commits the offset just past the longest run of acknowledged messages and remembers
the acknowledged ones after a gap until the gap is acknowledged too. Partitions come and go in
rebalances (eager: every member gives all back and gets a new share); before giving them back
a member waits for its worker to finish what it was handed and commits it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, IllegalStateError  # type: ignore[import-untyped]

from tessera.queue.backlog import MESSAGE_OVERHEAD
from tessera.queue.kafka.broker import broker_call, stop_quietly
from tessera.queue.ports import Delivery, QueueUnavailable

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PartitionProgress:
    """What one consumer handed out from one partition and what of it came back done."""

    # Offsets handed out and not yet committed, in fetch order → acknowledged yet?
    handed: dict[int, bool] = field(default_factory=dict)
    # The offset to commit (just past the acknowledged run) and the last one the group took.
    done_until: int = -1
    committed: int = -1
    # Just past the last offset handed out; None until something was.
    next_fetch: int | None = None


class ConsumedTopic(Protocol):
    """What a consumer reads of its queue (``KafkaIngestQueue`` is one), declared here so the
    consumer does not import the module that imports it."""

    bootstrap_servers: str
    topic: str
    group: str
    publish_timeout: float
    session_timeout_seconds: float

    def saw(self, records: int, size: int) -> None: ...


class KafkaQueueConsumer:
    def __init__(self, queue: ConsumedTopic, worker_id: str) -> None:
        self._queue = queue
        self.worker_id = worker_id
        self._kafka: Any = None
        self._progress: dict[int, PartitionProgress] = {}
        # Progress of partitions revoked in the rebalance now running, until it says who keeps
        # them; and the highest offset ever handed out (to mark redeliveries).
        self._revoked: dict[int, PartitionProgress] = {}
        self._highest: dict[int, int] = {}
        # Set by every ack: a rebalance waiting for unfinished messages looks again.
        self._acked = asyncio.Event()
        self._closed = False

    @property
    def partitions(self) -> list[int]:
        return sorted(self._progress)

    def _call(self, what: str, seconds: float | None = None) -> Any:
        q = self._queue
        return broker_call(q.bootstrap_servers, what, seconds or q.publish_timeout)

    async def _started(self) -> Any:
        if self._closed:
            raise QueueUnavailable(f"kafka consumer {self.worker_id} is closed")
        if self._kafka is None:
            q = self._queue
            session_ms = int(q.session_timeout_seconds * 1000)
            self._kafka = AIOKafkaConsumer(
                bootstrap_servers=q.bootstrap_servers,
                group_id=q.group,
                client_id=self.worker_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=session_ms,
                # Rebalances wait for every member's next heartbeat: a tenth of the session
                # keeps a joining worker from idling for seconds while the others notice.
                heartbeat_interval_ms=max(100, min(3000, session_ms // 10)),
                request_timeout_ms=max(int(q.publish_timeout * 1000), session_ms + 5000),
            )
            try:
                async with self._call(f"connecting worker {self.worker_id}"):
                    await self._kafka.start()
            except QueueUnavailable:
                kafka, self._kafka = self._kafka, None
                await stop_quietly(kafka.stop(), f"consumer {self.worker_id}", q.publish_timeout)
                raise
            # Subscribing after start() lets the group join run behind fetch (start() would
            # wait for an assignment, a whole session timeout while a crashed member lingers).
            self._kafka.subscribe([q.topic], listener=RebalanceListener(self))
        return self._kafka

    async def fetch(self, max_messages: int, wait_seconds: float) -> builtins.list[Delivery]:
        kafka = await self._started()
        await self._commit_pending(kafka)
        try:
            async with self._call("fetching", wait_seconds + self._queue.publish_timeout):
                batches = await kafka.getmany(
                    timeout_ms=int(wait_seconds * 1000), max_records=max_messages
                )
        except QueueUnavailable as exc:
            if isinstance(exc.__cause__, TimeoutError):
                return []
            raise
        deliveries: list[Delivery] = []
        for part in sorted(batches, key=lambda tp: tp.partition):
            progress = self._progress.setdefault(part.partition, PartitionProgress())
            highest = self._highest.get(part.partition, -1)
            for record in batches[part]:
                progress.handed[record.offset] = False
                progress.next_fetch = record.offset + 1
                deliveries.append(
                    Delivery(
                        partition=part.partition,
                        position=record.offset,
                        key=record.key.decode(errors="replace") if record.key else "",
                        body=record.value if record.value is not None else b"",
                        redelivered=record.offset <= highest,
                        handle=part,
                    )
                )
            if progress.next_fetch is not None:
                self._highest[part.partition] = max(highest, progress.next_fetch - 1)
        # The record sizes the queue's trim turns its retention megabytes into records by.
        size = sum(len(d.key) + len(d.body) + MESSAGE_OVERHEAD for d in deliveries)
        self._queue.saw(len(deliveries), size)
        return deliveries

    async def ack(self, deliveries: builtins.list[Delivery]) -> None:
        for delivery in deliveries:
            # Revoked partitions count too: the rebalance under way may give them back.
            progress = self._progress.get(delivery.partition) or self._revoked.get(
                delivery.partition
            )
            # Unknown: its partition moved to another consumer, which reads it again.
            if progress is not None and delivery.position in progress.handed:
                progress.handed[delivery.position] = True
        for progress in [*self._progress.values(), *self._revoked.values()]:
            while progress.handed:
                offset, acked = next(iter(progress.handed.items()))
                if not acked:
                    break
                del progress.handed[offset]
                progress.done_until = offset + 1
        self._acked.set()
        if self._kafka is not None and not self._closed:
            await self._commit_pending(self._kafka)

    async def _commit_pending(self, kafka: Any) -> None:
        offsets = {
            TopicPartition(self._queue.topic, number): progress.done_until
            for number, progress in self._progress.items()
            if progress.done_until > progress.committed
        }
        if not offsets:
            return
        try:
            async with self._call(f"committing offsets of {self._queue.topic}"):
                await kafka.commit(offsets)
        except QueueUnavailable as exc:
            if not isinstance(exc.__cause__, CommitFailedError | IllegalStateError):
                raise
            # The group is rebalancing: a partition that stays here is committed on the next
            # fetch; one that moved is read again by its new owner from the last commit.
            log.info("kafka consumer %s: commit deferred by a rebalance (%r)", self.worker_id, exc)
            return
        for part, offset in offsets.items():
            progress = self._progress.get(part.partition)
            if progress is not None:
                progress.committed = max(progress.committed, offset)

    async def on_revoked(self) -> None:
        """Before the partitions go, wait for the worker to finish what it was handed, and
        commit it: the next owner then neither works those messages again nor runs a profile's
        next message while this worker still runs the one before. The broker completes the
        rebalance without a member that has not rejoined within its session timeout, so the
        wait is half of that; a worker still busy then (storage down) lets go anyway."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._queue.session_timeout_seconds / 2
        while self._unfinished() and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.info("kafka consumer %s: rebalancing with unfinished messages", self.worker_id)
                break
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), remaining)
        if self._kafka is not None and not self._closed:
            try:
                await self._commit_pending(self._kafka)
            except QueueUnavailable as exc:
                # Not committed: the next owner reads those messages again (and drops them).
                log.warning("kafka consumer %s: not committed: %s", self.worker_id, exc)
        self._revoked, self._progress = self._progress, {}

    def _unfinished(self) -> bool:
        return any(not acked for p in self._progress.values() for acked in p.handed.values())

    async def on_assigned(self, assigned: Iterable[Any]) -> None:
        """A partition this consumer had before the rebalance keeps what it handed out (and the
        fetch position after it) when nobody committed on it meanwhile; a consumer never hands
        out twice what its worker may still be processing."""
        revoked, self._revoked = self._revoked, {}
        for part in assigned:
            answer = await self._kafka.committed(part)
            committed = answer if answer is not None else -1
            before = revoked.get(part.partition)
            # Our own last commit, or the one we asked for and did not hear back about.
            if (
                before is not None
                and before.next_fetch is not None
                and committed in (before.committed, before.done_until)
            ):
                before.committed = committed
                self._kafka.seek(part, before.next_fetch)
                self._progress[part.partition] = before
            else:
                self._progress[part.partition] = PartitionProgress(committed=committed)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._kafka is not None:
            # stop() leaves the group, so the others take the partitions over at once.
            await stop_quietly(self._kafka.stop(), f"consumer {self.worker_id}", 10.0)
        self._progress.clear()


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: KafkaQueueConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._consumer.on_revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._consumer.on_assigned(assigned)
