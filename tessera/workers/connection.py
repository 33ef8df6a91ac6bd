"""The ingest queue as the API and the workers hold it: connected lazily and again after a
failure, so a server starts while its queue is down (and answers 503 for events meanwhile)
and carries on by itself once the queue is back."""

from __future__ import annotations

import asyncio
import builtins
import logging

from tessera.queue.ports import (
    Delivery,
    IngestQueue,
    QueueConsumer,
    QueueMessage,
    QueueRetention,
    QueueStatus,
    QueueUnavailable,
)

log = logging.getLogger(__name__)

# After a failed connection attempt, the next one waits this long (requests in between get a
# 503 at once instead of each waiting for the broker's timeout).
RETRY_AFTER_FAILURE_S = 1.0


class ConnectedQueue:
    """An IngestQueue that makes sure ``start`` succeeded before every use."""

    def __init__(self, queue: IngestQueue) -> None:
        self.inner = queue
        self.backend = queue.backend
        self._started = False
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None

    async def start(self) -> None:
        """Try once; a failure is logged and tried again on first use."""
        try:
            await self.ensure()
        except QueueUnavailable as exc:
            log.warning("the ingest queue is not reachable yet: %s", exc.message)

    async def ensure(self) -> None:
        if self._started:
            return
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self.connected():  # another task connected while this one waited
                return
            if (
                self._failed_at is not None
                and loop.time() - self._failed_at < RETRY_AFTER_FAILURE_S
            ):
                raise QueueUnavailable(f"the {self.backend} ingest queue is not reachable")
            try:
                await self.inner.start()
            except QueueUnavailable:
                self._failed_at = loop.time()
                raise
            self._started = True
            self._failed_at = None

    def connected(self) -> bool:
        return self._started

    async def publish(self, messages: builtins.list[QueueMessage]) -> None:
        await self.ensure()
        await self.inner.publish(messages)

    def consumer(self, worker_id: str) -> QueueConsumer:
        return _ConnectedConsumer(self, worker_id)

    async def status(self) -> QueueStatus:
        await self.ensure()
        return await self.inner.status()

    async def apply_retention(self, retention: QueueRetention) -> builtins.list[str]:
        await self.ensure()
        return await self.inner.apply_retention(retention)

    async def read_retention(self) -> QueueRetention | None:
        await self.ensure()
        return await self.inner.read_retention()

    async def retention_risks(self) -> builtins.list[str]:
        await self.ensure()
        return await self.inner.retention_risks()

    async def close(self) -> None:
        await self.inner.close()


class _ConnectedConsumer:
    """Creates the real consumer once the queue is connected."""

    def __init__(self, queue: ConnectedQueue, worker_id: str) -> None:
        self._queue = queue
        self._worker_id = worker_id
        self._consumer: QueueConsumer | None = None

    async def _real(self) -> QueueConsumer:
        if self._consumer is None:
            await self._queue.ensure()
            self._consumer = self._queue.inner.consumer(self._worker_id)
        return self._consumer

    async def fetch(self, max_messages: int, wait_seconds: float) -> builtins.list[Delivery]:
        return await (await self._real()).fetch(max_messages, wait_seconds)

    async def ack(self, deliveries: builtins.list[Delivery]) -> None:
        await (await self._real()).ack(deliveries)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.close()
