"""``IngestQueue.read_retention`` on every queue backend: the limits in force read back.

Pulsar holds the retention of acknowledged messages itself, so any queue object, as another
process would build it, reads what ``apply_retention`` set there. The embedded log, the Redis
streams and the Kafka topic are trimmed by each queue object with the limits it holds (Kafka's
own retention is off: it would delete unprocessed records), so they read back their own.
Backends come from the registry in ``tests/support/queues.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tessera.queue.ports import IngestQueue, QueueRetention, QueueUnavailable
from tests.support.queues import QUEUE_BACKENDS, QueueFactory

PARTITIONS = 3
# The retention the support openers build queue objects with (none given: the default).
BUILT_WITH = QueueRetention(hours=720, megabytes=1024)
BROKERS = frozenset({"pulsar"})
# Small enough that Pulsar keeps the retention sizes below as given (it wants them above a
# partition's backlog quota).
BACKLOG_MB = 3


@pytest.fixture(params=list(QUEUE_BACKENDS))
async def queues(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    async with QUEUE_BACKENDS[request.param](request.node.name, tmp_path, PARTITIONS) as factory:
        yield factory


async def _settled(
    queue: IngestQueue, wanted: QueueRetention, seconds: float = 10.0
) -> QueueRetention | None:
    """What the queue reads once it reads ``wanted``, or at the deadline: a Kafka config
    change reaches the broker's metadata a moment after the controller took it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        found = await queue.read_retention()
        if found == wanted or loop.time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_read_retention_gives_back_what_apply_retention_set(queues: QueueFactory) -> None:
    queue = queues.open(max_backlog_mb=BACKLOG_MB)
    await queue.start()
    try:
        first = QueueRetention(hours=36.5, megabytes=100)
        await queue.apply_retention(first)
        assert await _settled(queue, first) == first
        # A second apply replaces the first one as a whole.
        second = QueueRetention(hours=2, megabytes=7)
        await queue.apply_retention(second)
        assert await _settled(queue, second) == second
    finally:
        await queue.close()


async def test_another_queue_object_reads_what_it_trims_by(queues: QueueFactory) -> None:
    applied = QueueRetention(hours=5, megabytes=30)
    queue = queues.open(max_backlog_mb=BACKLOG_MB)
    await queue.start()
    other = queues.open(max_backlog_mb=BACKLOG_MB)
    try:
        await queue.apply_retention(applied)
        await other.start()
        if queues.backend in BROKERS:
            # The broker holds it: every process sees the same limits.
            assert await _settled(other, applied) == applied
        else:
            # Nothing holds it but the object that trims: the other one keeps its own.
            assert await other.read_retention() == BUILT_WITH
            assert await queue.read_retention() == applied
    finally:
        await other.close()
        await queue.close()


async def test_an_unreachable_broker_is_unavailable_not_a_guess(queues: QueueFactory) -> None:
    unreachable = queues.unreachable()
    if unreachable is None:
        pytest.skip(f"the {queues.backend} queue is a local file: it cannot be unreachable")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        if queues.backend in BROKERS:
            with pytest.raises(QueueUnavailable):
                await unreachable.read_retention()
        else:
            # Redis and Kafka (trimmed by Tessera): the object answers what it trims by.
            assert await unreachable.read_retention() == BUILT_WITH
        assert loop.time() - started < 30
    finally:
        await unreachable.close()
