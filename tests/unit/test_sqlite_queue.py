"""What only the embedded queue promises beyond the IngestQueue contract: the log outlives its
process, a frozen worker's partitions move on after its lease while a busy one keeps them,
several processes share the file, publishers share commits, and retention never drops
unacknowledged messages."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tessera.queue.embedded.queue import SqliteIngestQueue
from tessera.queue.ports import (
    Delivery,
    QueueConsumer,
    QueueMessage,
    QueueRetention,
    QueueStatus,
    partition_of,
)

PARTITIONS = 4
T = TypeVar("T")


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


async def _opened(path: Path, *, lease_seconds: float = 10.0) -> SqliteIngestQueue:
    queue = SqliteIngestQueue(path, partitions=PARTITIONS, lease_seconds=lease_seconds)
    await queue.start()
    return queue


@pytest.fixture
async def queue(log_path: Path) -> AsyncIterator[SqliteIngestQueue]:
    opened = await _opened(log_path)
    yield opened
    await opened.close()


async def _drain(
    consumer: QueueConsumer, expected: int, *, ack: bool = True, rounds: int = 100
) -> list[Delivery]:
    got: list[Delivery] = []
    for _ in range(rounds):
        if len(got) >= expected:
            break
        batch = await consumer.fetch(100, 0.3)
        if ack and batch:
            await consumer.ack(batch)
        got += batch
    return got


def _numbered(key: str, count: int, first: int = 0) -> list[QueueMessage]:
    return [QueueMessage(key, str(n).encode()) for n in range(first, first + count)]


def _one_key_per_partition() -> list[str]:
    keys: dict[int, str] = {}
    candidate = 0
    while len(keys) < PARTITIONS:
        keys.setdefault(partition_of(f"key-{candidate}", PARTITIONS), f"key-{candidate}")
        candidate += 1
    return [keys[p] for p in range(PARTITIONS)]


async def test_the_log_survives_reopening(log_path: Path) -> None:
    first = await _opened(log_path)
    await first.publish([])
    await first.publish(_numbered("k", 20))
    await first.close()
    await first.close()

    second = await _opened(log_path)
    consumer = second.consumer("worker-1")
    got = await _drain(consumer, 20)
    assert [int(d.body) for d in got] == list(range(20))
    await consumer.close()
    await second.close()

    third = await _opened(log_path)
    assert (await third.status()).backlog == 0
    assert await third.consumer("worker-1").fetch(10, 0.1) == []
    await third.close()


class FrozenProcess:
    """Another worker process, on an event loop of its own that runs only while the test
    calls into it: between calls nothing of it runs (not even its lease renewal), as with a
    process that is stopped or whose event loop hangs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    async def call(self, work: Coroutine[Any, Any, T]) -> T:
        return await asyncio.to_thread(self.loop.run_until_complete, work)

    def close(self) -> None:
        self.loop.close()


async def test_a_frozen_consumer_loses_its_partitions_after_the_lease(log_path: Path) -> None:
    producer = await _opened(log_path)
    await producer.publish(_numbered("a", 10) + _numbered("b", 10))
    frozen = FrozenProcess()
    crashed_queue = await frozen.call(_opened(log_path, lease_seconds=1.0))
    crashed = crashed_queue.consumer("worker-crashed")
    taken = await frozen.call(_drain(crashed, 20, ack=False))
    assert len(taken) == 20
    await frozen.call(crashed.ack([d for d in taken if int(d.body) < 4]))
    # The freeze: from here on nothing of that process runs until it is called again.

    heir_queue = await _opened(log_path, lease_seconds=1.0)
    heir = heir_queue.consumer("worker-heir")
    again = await _drain(heir, 12, ack=False)
    assert len(again) == 12
    for key in ("a", "b"):
        assert [int(d.body) for d in again if d.key == key] == list(range(4, 10))
    assert all(d.redelivered for d in again)

    # The crashed consumer wakes up and acknowledges what it had: the heir owns those
    # partitions now, so nothing moves and the messages stay unacknowledged.
    await frozen.call(crashed.ack(taken))
    await frozen.call(crashed_queue.close())
    frozen.close()
    await heir.close()
    await heir_queue.close()
    last = producer.consumer("worker-last")
    assert len(await _drain(last, 12)) == 12
    await last.close()
    assert (await producer.status()).backlog == 0
    await producer.close()


async def test_a_consumer_busy_for_longer_than_its_lease_keeps_its_partitions(
    log_path: Path,
) -> None:
    """Slow storage: a batch takes several leases to work through. The leases are renewed
    meanwhile, so no other worker is handed the same messages."""
    queue = await _opened(log_path, lease_seconds=1.0)
    await queue.publish(_numbered("a", 10) + _numbered("b", 10))
    busy = queue.consumer("worker-busy")
    taken = await _drain(busy, 20, ack=False)
    assert len(taken) == 20
    await asyncio.sleep(3.0)  # working on the batch, calling nothing on the consumer

    other_queue = await _opened(log_path, lease_seconds=1.0)
    other = other_queue.consumer("worker-other")
    assert await _drain(other, 1, rounds=5) == [], "nothing is handed out twice"
    await busy.ack(taken)
    assert (await queue.status()).backlog == 0
    await other.close()
    await other_queue.close()
    await busy.close()
    await queue.close()


async def test_a_newcomer_gets_the_partitions_the_first_consumer_is_done_with(
    queue: SqliteIngestQueue, log_path: Path
) -> None:
    await queue.publish([QueueMessage(key, b"x") for key in _one_key_per_partition()])
    first = queue.consumer("worker-1")
    taken = await first.fetch(100, 0)
    assert len(taken) == PARTITIONS

    second_queue = await _opened(log_path)
    second = second_queue.consumer("worker-2")
    assert await second.fetch(100, 0) == []
    # Every partition of the first consumer has an unacknowledged delivery: it keeps them all.
    assert await first.fetch(100, 0) == []
    assert _owners(await queue.status()) == {"worker-1": PARTITIONS}

    await first.ack(taken)
    assert await first.fetch(100, 0) == []
    assert await second.fetch(100, 0) == []
    assert _owners(await queue.status()) == {"worker-1": 2, "worker-2": 2}

    await first.close()
    assert await second.fetch(100, 0) == []
    assert _owners(await queue.status()) == {"worker-2": PARTITIONS}
    await second.close()
    await second_queue.close()


def _owners(status: QueueStatus) -> dict[str, int]:
    counts: dict[str, int] = {}
    for partition in status.partitions:
        if partition.owner is not None:
            counts[partition.owner] = counts.get(partition.owner, 0) + 1
    return counts


def _publish_from_another_process(path: str, keys: int, per_key: int) -> None:
    async def publish() -> None:
        queue = await _opened(Path(path))
        for n in range(per_key):
            await queue.publish([QueueMessage(f"k{k}", f"k{k}:{n}".encode()) for k in range(keys)])
        await queue.close()

    asyncio.run(publish())


async def test_another_process_publishes_while_this_one_consumes(
    queue: SqliteIngestQueue, log_path: Path
) -> None:
    keys, per_key = 5, 40
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=_publish_from_another_process, args=(str(log_path), keys, per_key)
    )
    child.start()
    consumer = queue.consumer("worker-1")
    got = await _drain(consumer, keys * per_key, rounds=400)
    await asyncio.to_thread(child.join, 60)
    assert child.exitcode == 0
    assert len(got) == keys * per_key
    for k in range(keys):
        numbers = [int(d.body.split(b":")[1]) for d in got if d.key == f"k{k}"]
        assert numbers == list(range(per_key))
    await consumer.close()


async def test_concurrent_publishers_share_commits(queue: SqliteIngestQueue) -> None:
    before = queue.commits
    await asyncio.gather(*(queue.publish([QueueMessage(f"k{n}", b"x")]) for n in range(300)))
    assert (await queue.status()).backlog == 300
    assert queue.commits - before < 300


async def test_retention_removes_only_acknowledged_messages(
    queue: SqliteIngestQueue, log_path: Path
) -> None:
    await queue.publish(_numbered("k", 10))
    consumer = queue.consumer("worker-1")
    taken = await _drain(consumer, 10, ack=False)
    await consumer.ack(taken[:6])
    await consumer.close()

    lines = await queue.apply_retention(QueueRetention(hours=720, megabytes=1024))
    assert "0 removed" in lines[0]
    # An hour budget of zero: everything acknowledged is too old, nothing else goes.
    lines = await queue.apply_retention(QueueRetention(hours=0, megabytes=1024))
    assert "720" not in lines[0] and "6 removed" in lines[0]
    assert (await queue.status()).backlog == 4
    rest = queue.consumer("worker-2")
    assert [int(d.body) for d in await _drain(rest, 4)] == [6, 7, 8, 9]
    await rest.close()


async def test_the_size_budget_trims_acknowledged_messages_and_seqs_are_never_reused(
    queue: SqliteIngestQueue,
) -> None:
    await queue.publish(_numbered("k", 5))
    consumer = queue.consumer("worker-1")
    first = await _drain(consumer, 5)
    await queue.publish(_numbered("k", 3, first=5))
    unacknowledged = await _drain(consumer, 3, ack=False)
    lines = await queue.apply_retention(QueueRetention(hours=720, megabytes=0))
    assert "5 removed" in lines[0]
    assert await queue.trim() == 0
    assert (await queue.status()).backlog == 3
    await consumer.close()

    again = queue.consumer("worker-2")
    redelivered = await _drain(again, 3)
    assert [d.position for d in redelivered] == [d.position for d in unacknowledged]
    assert await queue.trim() == 3
    # Every message is gone now; new ones still come after the old positions.
    await queue.publish(_numbered("k", 2, first=8))
    newest = await _drain(again, 2)
    assert [int(d.body) for d in newest] == [8, 9]
    assert min(d.position for d in newest) > max(d.position for d in first + redelivered)
    await again.close()
