"""What only the Redis Streams queue promises beyond the contract suite: partition leases that a
crashed consumer loses, and retention trimming that never drops what is not acknowledged."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from tessera.queue.ports import Delivery, QueueConsumer, QueueMessage, QueueRetention
from tessera.queue.redis.queue import RedisIngestQueue
from tests.support.queues_redis import redis_queue


def _number(delivery: Delivery) -> int:
    return int(delivery.body.decode().split(":")[1])


async def _collect(consumer: QueueConsumer, expected: int, rounds: int = 120) -> list[Delivery]:
    """Fetch without acknowledging until ``expected`` arrived (the bound only stops a hang)."""
    got: list[Delivery] = []
    for _ in range(rounds):
        if len(got) >= expected:
            break
        got += await consumer.fetch(expected - len(got), 0.5)
    return got


async def _length(queue: RedisIngestQueue) -> int:
    return int(await queue.client.xlen(queue.streams[0]))


async def test_a_crashed_consumer_loses_its_partitions_to_another(tmp_path: Path) -> None:
    async with redis_queue("crashed-consumer", tmp_path, 4, lease_seconds=1.0) as queues:
        producer = queues.open()
        await producer.start()
        await producer.publish(
            [QueueMessage(f"key-{k}", f"key-{k}:{n}".encode()) for n in range(8) for k in range(3)]
        )

        crashed_queue = queues.open()
        crashed = crashed_queue.consumer("worker-crashed")
        taken = await _collect(crashed, 24)
        assert len(taken) == 24
        assert not any(delivery.redelivered for delivery in taken)
        await crashed.ack([d for d in taken if _number(d) < 2])
        status = await crashed_queue.status()
        assert {p.owner for p in status.partitions} == {"worker-crashed"}
        assert status.backlog == 18

        # The crash: the consumer goes away without close, its renewal with it.
        gone = weakref.ref(crashed)
        del crashed, taken
        gc.collect()
        assert gone() is None

        survivor_queue = queues.open()
        survivor = survivor_queue.consumer("worker-survivor")
        again = await _collect(survivor, 18)
        assert len(again) == 18
        assert all(delivery.redelivered for delivery in again)
        for k in range(3):
            numbers = [_number(d) for d in again if d.key == f"key-{k}"]
            assert numbers == list(range(2, 8)), k
        assert await survivor.fetch(100, 0.3) == []
        await survivor.ack(again)

        status = await survivor_queue.status()
        assert {p.owner for p in status.partitions} == {"worker-survivor"}
        assert status.backlog == 0
        await survivor.close()
        assert {p.owner for p in (await producer.status()).partitions} == {None}
        for queue in (producer, crashed_queue, survivor_queue):
            await queue.close()


async def test_retention_trims_only_acknowledged_entries(tmp_path: Path) -> None:
    async with redis_queue("retention-trim", tmp_path, 1) as queues:
        queue = queues.open()
        await queue.start()
        await queue.publish([QueueMessage("k", f"k:{n}".encode()) for n in range(20)])
        first = queue.consumer("worker-1")
        taken = await _collect(first, 12)
        assert [_number(d) for d in taken] == list(range(12))
        # Acknowledged out of order: 0-4 and 8. Delivered, not acknowledged: 5-7 and 9-11.
        # Never delivered: 12-19.
        await first.ack([d for d in taken if _number(d) < 5 or _number(d) == 8])

        lines = await queue.apply_retention(QueueRetention(hours=720, megabytes=1024))
        assert lines and all(lines)
        assert await _length(queue) == 20, "nothing is older than 720 h nor over 1 GB"

        # A size limit of nothing: only the acknowledged entries before the oldest pending go.
        lines = await queue.apply_retention(QueueRetention(hours=720, megabytes=0))
        assert any("5 acknowledged entries trimmed" in line for line in lines), lines
        assert await _length(queue) == 15
        # An age limit of nothing: still no further than the oldest pending entry.
        await queue.apply_retention(QueueRetention(hours=0, megabytes=0))
        assert await queue.trim() == 0
        assert await _length(queue) == 15

        await first.close()
        second = queue.consumer("worker-2")
        rest = await _collect(second, 14)
        assert [_number(d) for d in rest] == [5, 6, 7, 9, 10, 11, *range(12, 20)]
        assert [d.redelivered for d in rest] == [True] * 6 + [False] * 8
        await second.ack(rest)

        # Everything acknowledged: all but the last delivered entry may go.
        assert await queue.trim() == 14
        assert await _length(queue) == 1
        assert (await queue.status()).backlog == 0
        await second.close()
        await queue.close()
