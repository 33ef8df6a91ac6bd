"""The queue never drops what it acknowledged, on every backend (issue 11, item 3).

- Retention, however short and small, removes processed messages only: with no worker running,
  messages published, a wait past the retention and a trim (what the worker processes run every
  few minutes) all come out of the queue when a worker finally drains it.
- The unprocessed backlog is bounded by back-pressure instead: publishing past
  ``max_backlog_mb`` raises QueueFull (a QueueUnavailable with ``retry_after``: a 503 with
  Retry-After at the API), keeps nothing, is counted in the status, and publishing works again
  once a worker drained the backlog.

Backends come from the registry in ``tests/support/queues.py``; every one runs against its real
server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tessera.queue.ports import (
    IngestQueue,
    QueueConsumer,
    QueueFull,
    QueueMessage,
    QueueRetention,
)
from tests.support.queues import QUEUE_BACKENDS, QueueFactory
from tests.support.queues_kafka import broker_retention_check_seconds

PARTITIONS = 4
BODY = b"x" * 1000
# As short and as small as the settings allow to be written: a second, a megabyte.
TINY_RETENTION = QueueRetention(hours=1 / 3600, megabytes=1)


@pytest.fixture(params=list(QUEUE_BACKENDS))
async def queues(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    async with QUEUE_BACKENDS[request.param](request.node.name, tmp_path, PARTITIONS) as factory:
        yield factory


def _batch(first: int, count: int) -> list[QueueMessage]:
    return [
        QueueMessage(f"profile-{n % 97}", b"%d:" % n + BODY) for n in range(first, first + count)
    ]


async def _drain(consumer: QueueConsumer, expected: int, seconds: float = 60.0) -> set[bytes]:
    """Fetch and acknowledge until ``expected`` distinct messages came (or the deadline)."""
    got: set[bytes] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while len(got) < expected and loop.time() < deadline:
        batch = await consumer.fetch(500, 0.5)
        if batch:
            await consumer.ack(batch)
        got.update(d.body for d in batch)
    return got


async def _trim(queue: IngestQueue) -> int:
    """What the workers' trimmer runs; Pulsar applies its retention in the broker."""
    trim: Any = getattr(queue, "trim", None)
    return 0 if trim is None else int(await trim())


async def _wait_past_retention(backend: str) -> None:
    seconds = 2.5
    if backend == "kafka":
        # The broker deletes by retention only when its check runs: wait for one (when the
        # broker checks often enough for a test to wait; scripts/kafka sets 1 s).
        check = await broker_retention_check_seconds()
        if check <= 30:
            seconds = max(seconds, check + 2)
    await asyncio.sleep(seconds)


async def test_short_small_retention_drops_nothing_unprocessed(queues: QueueFactory) -> None:
    producer = queues.open(max_backlog_mb=64)
    await producer.start()
    worker = queues.open(max_backlog_mb=64)
    try:
        await producer.apply_retention(TINY_RETENTION)
        sent: set[bytes] = set()
        for first in range(0, 3000, 250):  # ~3 MB: three times the retention size
            batch = _batch(first, 250)
            await producer.publish(batch)
            sent.update(m.body for m in batch)
        await _wait_past_retention(queues.backend)
        await _trim(producer)
        assert await producer.retention_risks() == []
        await worker.start()
        consumer = worker.consumer("late-worker")
        got = await _drain(consumer, len(sent))
        assert len(sent - got) == 0, f"{len(sent - got)} acknowledged messages lost"
        assert got == sent
        await consumer.close()
        # Processed now: those the retention does remove (Pulsar: the broker, on its schedule).
        if queues.backend != "pulsar":
            assert await _trim(producer) > 0
    finally:
        await producer.close()
        await worker.close()


async def _fill_until_refused(queue: IngestQueue) -> tuple[set[bytes], QueueFull]:
    """Publish batches of 50 messages of ~1 KB until the queue refuses one (at most ~6 MB)."""
    acknowledged: set[bytes] = set()
    for first in range(0, 6000, 50):
        batch = _batch(first, 50)
        try:
            await queue.publish(batch)
        except QueueFull as refused:
            return acknowledged, refused
        acknowledged.update(m.body for m in batch)
    raise AssertionError(f"no QueueFull after {len(acknowledged)} messages past a 1 MB limit")


async def test_a_full_backlog_refuses_publishing_until_a_worker_drains_it(
    queues: QueueFactory,
) -> None:
    producer = queues.open(max_backlog_mb=1)
    await producer.start()
    worker = queues.open()
    try:
        await producer.apply_retention(QueueRetention(hours=720, megabytes=1024))
        acknowledged, refused = await _fill_until_refused(producer)
        assert refused.retry_after is not None and refused.retry_after >= 1
        # Refused before the limit (1 MiB), and not long before it.
        assert 0.5 * 2**20 <= len(acknowledged) * len(BODY) <= 2**20
        # Refused again at once, without a round trip (nothing drains the backlog).
        with pytest.raises(QueueFull):
            await producer.publish(_batch(90_000, 50))
        state = (await producer.status()).backpressure
        assert state is not None
        assert state.refusals == 2 and not state.accepting
        assert state.limit_bytes == 2**20

        await worker.start()
        consumer = worker.consumer("worker-1")
        got = await _drain(consumer, len(acknowledged))
        assert got == acknowledged, f"{len(acknowledged - got)} acknowledged messages lost"
        # The producer's background measurement sees the drained backlog and accepts again.
        accepted = await _accepted_again(producer)
        assert accepted is not None, "still refusing 20 s after the backlog was drained"
        assert await _drain(consumer, 1) == {accepted.body}
        await consumer.close()
    finally:
        await producer.close()
        await worker.close()


async def _accepted_again(queue: IngestQueue, seconds: float = 20.0) -> QueueMessage | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    attempt = 100_000
    while loop.time() < deadline:
        message = _batch(attempt, 1)[0]
        try:
            await queue.publish([message])
            return message
        except QueueFull:
            attempt += 1
            await asyncio.sleep(0.25)
    return None
