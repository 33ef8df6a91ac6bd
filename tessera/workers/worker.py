"""A queue worker: takes batches of messages from its consumer, runs the pipeline on each and
acknowledges what is done.

Order: one key's messages (one profile, or one anonymous session) run one after the other, in
the order the queue gave them; messages of different keys run at once, up to the concurrency
setting, so their writes meet in the storage writer's bulk batches.

Failures: storage being down (StorageUnavailable) is retried, with backoff, for as long as it
lasts, because nothing is wrong with the message. Any other error is retried a few times and
then the message goes to the dead letters with the error, so one poison message never blocks
its partition. A message is acknowledged only after its effects are committed (or after it
was dead-lettered), so a crash anywhere redelivers it; the pipeline drops events whose ids are
already stored, so redelivery stores nothing twice and counts nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from tessera.errors import StorageUnavailable
from tessera.model.common import DEFAULT_TENANT, new_id, utcnow
from tessera.pipeline.ingest import Ingestor
from tessera.storage.queue_ports import Delivery, IngestQueue, QueueConsumer
from tessera.storage.worker_ports import DeadLetter, DeadLetterStore, WorkerBeat, WorkerBeats
from tessera.workers.codec import UnreadableMessage, decode_batch

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
BEAT_INTERVAL_S = 2.0


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    concurrency: int = 64
    fetch: int = 500
    max_attempts: int = 5
    backoff_s: float = 0.2
    # How long an empty fetch waits for messages (also how soon a stop is noticed).
    wait_s: float = 0.5


@dataclass(slots=True)
class WorkerCounters:
    messages: int = 0
    events: int = 0
    retries: int = 0
    dead_letters: int = 0
    partitions: set[int] = field(default_factory=set)


class _Stopping(Exception):
    """The worker is stopping while a message waits for storage: leave it unacknowledged."""


class QueueWorker:
    def __init__(
        self,
        *,
        queue: IngestQueue,
        ingestor: Ingestor,
        dead_letters: DeadLetterStore,
        beats: WorkerBeats,
        topic: str,
        options: WorkerOptions,
        worker_id: str | None = None,
    ) -> None:
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
        self._queue = queue
        self._ingestor = ingestor
        self._dead_letters = dead_letters
        self._beats = beats
        self._topic = topic
        self._options = options
        self._limit = asyncio.Semaphore(options.concurrency)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.counters = WorkerCounters()
        self._started = utcnow()
        self._last_beat: tuple[datetime, int] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"queue-worker-{self.worker_id}")

    async def stop(self) -> None:
        """Finish the batch in hand, acknowledge it, give the partitions back."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def run(self) -> None:
        consumer = self._queue.consumer(self.worker_id)
        beating = asyncio.create_task(self._beat_forever())
        try:
            while not self._stopping.is_set():
                await self.step(consumer)
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            await self._close(consumer)

    async def drain(self, *, idle_rounds: int = 2) -> WorkerCounters:
        """Process until the queue has nothing for this worker ``idle_rounds`` fetches in a
        row, then give the partitions back (the burst mode tests and `--burst` use)."""
        consumer = self._queue.consumer(self.worker_id)
        idle = 0
        try:
            while idle < idle_rounds:
                idle = 0 if await self.step(consumer) else idle + 1
        finally:
            await self._close(consumer)
            await self._beat()
        return self.counters

    async def step(self, consumer: QueueConsumer) -> int:
        """One round: fetch, process, acknowledge. Answers how many messages were done."""
        try:
            deliveries = await consumer.fetch(self._options.fetch, self._options.wait_s)
        except StorageUnavailable as exc:
            log.warning("the ingest queue is unreachable (%s); trying again", exc.message)
            await self._nap(1.0)
            return 0
        if not deliveries:
            return 0
        done = await self._process(deliveries)
        if done:
            try:
                await consumer.ack(done)
            except StorageUnavailable as exc:
                # Not acknowledged: delivered again later, and dropped then as already stored.
                log.warning("acknowledging %d messages failed (%s)", len(done), exc.message)
        return len(done)

    async def _close(self, consumer: QueueConsumer) -> None:
        try:
            await consumer.close()
        except Exception:
            log.exception("closing the queue consumer failed")
        try:
            await self._beats.forget(DEFAULT_TENANT, self.worker_id)
        except Exception:
            log.warning("could not remove this worker's heartbeat", exc_info=True)

    # --- processing ------------------------------------------------------------------------

    async def _process(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Every key's messages in order, keys at once; the deliveries that are done."""
        by_key: OrderedDict[str, list[Delivery]] = OrderedDict()
        for delivery in deliveries:
            by_key.setdefault(delivery.key, []).append(delivery)
            self.counters.partitions.add(delivery.partition)
        done: list[Delivery] = []

        async def run_key(messages: list[Delivery]) -> None:
            async with self._limit:
                for delivery in messages:
                    try:
                        await self._handle(delivery)
                    except _Stopping:
                        return  # this key's later messages wait too: order is kept
                    done.append(delivery)

        await asyncio.gather(*(run_key(messages) for messages in by_key.values()))
        return done

    async def _handle(self, delivery: Delivery) -> None:
        try:
            batch = decode_batch(delivery.body)
        except UnreadableMessage as exc:
            await self._bury(delivery, DEFAULT_TENANT, str(exc), 1)
            return
        attempts = 0
        while True:
            try:
                result = await self._ingestor.ingest(batch)
            except StorageUnavailable as exc:
                # Storage is down: the message is fine, so this never counts as an attempt.
                self.counters.retries += 1
                log.warning("storage unavailable (%s); message retried", exc.message)
                await self._pause(self._backoff(self.counters.retries))
                continue
            except Exception as exc:
                attempts += 1
                if attempts >= self._options.max_attempts:
                    log.exception("message dead-lettered after %d attempts", attempts)
                    await self._bury(delivery, batch.tenant, _describe(exc), attempts)
                    return
                self.counters.retries += 1
                await self._pause(self._backoff(attempts))
                continue
            self.counters.messages += 1
            self.counters.events += len(result.event_ids)
            return

    async def _bury(self, delivery: Delivery, tenant: str, error: str, attempts: int) -> None:
        letter = DeadLetter(
            id=new_id(),
            tenant=tenant,
            topic=self._topic,
            partition=delivery.partition,
            key=delivery.key,
            position=delivery.position,
            body=delivery.body,
            error=error[:4000],
            attempts=attempts,
            created=utcnow(),
        )
        failures = 0
        while True:
            try:
                await self._dead_letters.add(letter)
                break
            except Exception:
                # Without its dead letter the message must not be acknowledged: keep trying.
                failures += 1
                log.warning("the dead letter could not be stored; trying again", exc_info=True)
                await self._pause(self._backoff(failures))
        self.counters.dead_letters += 1

    def _backoff(self, attempt: int) -> float:
        return float(min(MAX_BACKOFF_S, self._options.backoff_s * 2 ** max(0, attempt - 1)))

    async def _nap(self, seconds: float) -> None:
        """Sleep, waking early when the worker is told to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless the worker is told to stop meanwhile (then raise _Stopping)."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise _Stopping

    # --- heartbeats ------------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        while True:
            await self._beat()
            await asyncio.sleep(BEAT_INTERVAL_S)

    async def _beat(self) -> None:
        now = utcnow()
        beat = WorkerBeat(
            worker_id=self.worker_id,
            tenant=DEFAULT_TENANT,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self._started,
            seen=now,
            messages=self.counters.messages,
            events=self.counters.events,
            retries=self.counters.retries,
            dead_letters=self.counters.dead_letters,
            rate=self._rate(now),
            partitions=sorted(self.counters.partitions),
        )
        self.counters.partitions.clear()
        try:
            await self._beats.beat(beat)
        except Exception:
            log.warning("worker heartbeat not stored", exc_info=True)

    def _rate(self, now: datetime) -> float:
        last, self._last_beat = self._last_beat, (now, self.counters.messages)
        if last is None:
            return 0.0
        seconds = (now - last[0]).total_seconds()
        return (self.counters.messages - last[1]) / seconds if seconds > 0 else 0.0


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
