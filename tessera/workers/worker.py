"""A queue worker: takes messages from its consumer, runs the pipeline on each and
acknowledges what is done.

Order: one key's messages (one session) run one after the other, in the order the queue gave
them; messages of different keys run at once, up to the concurrency setting, so their writes
meet in the storage writer's bulk batches. Keys do not wait for each other: the worker fetches
more once half of what it holds is done, and acknowledges each message once finished, so a key
whose message keeps failing holds back its own later messages only.

Failures: storage being unavailable (StorageUnavailable: down, overloaded, a partition closed)
is retried, with backoff, for as long as it lasts, because nothing is wrong with the message.
Any other error — a record the store refuses for what it is (RecordRejected), a bug — is
retried a few times (TESSERA_WORKER_MAX_ATTEMPTS) and then the message goes to the dead letters
with the error, so one poison message never blocks its partition. A message is acknowledged
only after its effects are committed (or after it was dead-lettered), so a crash anywhere
redelivers it; a redelivered message stores nothing twice and counts nothing twice (event ids
are stored once, and the profile and session remember the requests they took in:
model/applied.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from tessera.core.backoff import backoff_delay
from tessera.errors import StorageUnavailable
from tessera.model.common import DEFAULT_TENANT, new_id, utcnow
from tessera.pipeline.request import IncomingBatch, IngestResult
from tessera.queue.ports import Delivery, IngestQueue, QueueConsumer
from tessera.storage.worker_ports import DeadLetter, DeadLetterStore, WorkerBeat, WorkerBeats
from tessera.workers.codec import UnreadableMessage, decode_batch

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
BEAT_INTERVAL_S = 2.0
# How long a fetch waits for new messages while keys are still running: short, so that what
# they finish is acknowledged without delay.
BUSY_FETCH_WAIT_S = 0.01


class Pipeline(Protocol):
    """What a worker runs each message through (the ingest pipeline, pipeline/ingest.py)."""

    async def ingest(self, batch: IncomingBatch) -> IngestResult: ...


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
        ingestor: Pipeline,
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
        # Messages fetched and not yet acknowledged; per key, those not yet finished.
        self._max_in_hand = 2 * options.fetch
        self._in_hand = 0
        self._keys: dict[str, deque[Delivery]] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self._finished: list[Delivery] = []
        self._progress = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.counters = WorkerCounters()
        self._started = utcnow()
        self._last_beat: tuple[datetime, int] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"queue-worker-{self.worker_id}")

    async def stop(self) -> None:
        """Finish the messages in hand, acknowledge them, give the partitions back."""
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
            await self._settle(consumer)
            await self._close(consumer)

    async def drain(self, *, idle_rounds: int = 2) -> WorkerCounters:
        """Process until the queue has nothing for this worker ``idle_rounds`` fetches in a
        row, then give the partitions back (the burst mode tests and `--burst` use)."""
        consumer = self._queue.consumer(self.worker_id)
        idle = 0
        try:
            while idle < idle_rounds:
                done = await self.step(consumer)
                idle = 0 if done or self._keys else idle + 1
        finally:
            await self._settle(consumer)
            await self._close(consumer)
            await self._beat()
        return self.counters

    async def step(self, consumer: QueueConsumer) -> int:
        """One round: take more messages when half of those in hand are done, start each key's
        messages, acknowledge what finished. Answers how many were acknowledged.

        Keys run on their own: one whose message keeps failing (its storage partition is
        closed, a poison message on its attempts) holds back only its own later messages,
        never the other keys, nor the fetching of new ones."""
        if self._in_hand <= self._options.fetch // 2:
            room = self._max_in_hand - self._in_hand
            wait = self._options.wait_s if not self._keys else BUSY_FETCH_WAIT_S
            try:
                deliveries = await consumer.fetch(min(self._options.fetch, room), wait)
            except StorageUnavailable as exc:
                log.warning("the ingest queue is unreachable (%s); trying again", exc.message)
                await self._nap(1.0)
                deliveries = []
            self._take(deliveries)
            if not deliveries and self._keys:
                await self._progress_or(self._options.wait_s)
        else:
            await self._progress_or(self._options.wait_s)
        return await self._acknowledge(consumer)

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

    def _take(self, deliveries: list[Delivery]) -> None:
        """Queue each delivery behind its key's earlier ones; start a runner for a key that
        has none."""
        for delivery in deliveries:
            self.counters.partitions.add(delivery.partition)
            self._in_hand += 1
            chain = self._keys.get(delivery.key)
            if chain is not None:
                chain.append(delivery)
                continue
            self._keys[delivery.key] = deque([delivery])
            task = asyncio.create_task(self._run_key(delivery.key), name="queue-worker-key")
            self._runners.add(task)
            task.add_done_callback(self._runners.discard)

    async def _run_key(self, key: str) -> None:
        """One key's messages, one after the other, in the order the queue gave them."""
        chain = self._keys[key]
        try:
            while chain:
                delivery = chain[0]
                async with self._limit:
                    try:
                        await self._handle(delivery)
                    except _Stopping:
                        return  # this key's later messages wait too: order is kept
                chain.popleft()
                self._finished.append(delivery)
                self._progress.set()
        finally:
            # What is left (the worker is stopping) stays unacknowledged: delivered again
            # after this consumer closes.
            self._in_hand -= len(chain)
            del self._keys[key]
            self._progress.set()

    async def _progress_or(self, seconds: float) -> None:
        """Wait until a message finished, at most ``seconds``."""
        self._progress.clear()
        if self._finished:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout=seconds)

    async def _acknowledge(self, consumer: QueueConsumer) -> int:
        done, self._finished = self._finished, []
        if not done:
            return 0
        self._in_hand -= len(done)
        try:
            await consumer.ack(done)
        except StorageUnavailable as exc:
            # Not acknowledged: delivered again later, and dropped then as already stored.
            log.warning("acknowledging %d messages failed (%s)", len(done), exc.message)
        return len(done)

    async def _settle(self, consumer: QueueConsumer) -> None:
        """On the way out: let every key finish what it holds (a message waiting for storage
        gives up at its next pause, unacknowledged), then acknowledge what finished."""
        if self._runners:
            await asyncio.gather(*self._runners, return_exceptions=True)
        await self._acknowledge(consumer)

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
        return backoff_delay(attempt, self._options.backoff_s, MAX_BACKOFF_S)

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
