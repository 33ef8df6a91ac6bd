"""The IngestQueue contract (tessera/queue/ports.py) on every queue backend.

Each backend's opener lives in ``tests/support/queues.py``; it yields a ``QueueFactory`` whose
``open()`` builds a new queue object (its own connections, as a second process would) on one
topic that only this test uses. The suite is the same for all backends.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tessera.queue.ports import (
    Delivery,
    IngestQueue,
    QueueConsumer,
    QueueMessage,
    QueueRetention,
    QueueStatus,
    QueueUnavailable,
)
from tests.support.queues import QUEUE_BACKENDS, QueueFactory

PARTITIONS = 4


@pytest.fixture(params=list(QUEUE_BACKENDS))
async def queues(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    async with QUEUE_BACKENDS[request.param](request.node.name, tmp_path, PARTITIONS) as factory:
        yield factory


def _messages(keys: int, per_key: int) -> list[QueueMessage]:
    # Interleaved, as concurrent clients would publish them.
    return [
        QueueMessage(key=f"profile-{k}", body=f"profile-{k}:{n}".encode())
        for n in range(per_key)
        for k in range(keys)
    ]


async def _drain(
    consumer: QueueConsumer, expected: int, *, ack: bool = True, rounds: int = 60
) -> list[Delivery]:
    got: list[Delivery] = []
    for _ in range(rounds):
        if len(got) >= expected:
            break
        batch = await consumer.fetch(100, 0.5)
        if ack and batch:
            await consumer.ack(batch)
        got += batch
    return got


def _in_key_order(deliveries: list[Delivery]) -> dict[str, list[int]]:
    sequence: dict[str, list[int]] = defaultdict(list)
    for delivery in deliveries:
        key, number = delivery.body.decode().split(":")
        assert key == delivery.key
        sequence[key].append(int(number))
    return sequence


async def _open(factory: QueueFactory) -> IngestQueue:
    queue = factory.open()
    await queue.start()
    return queue


async def test_every_published_message_is_delivered_once_in_key_order(
    queues: QueueFactory,
) -> None:
    producer = await _open(queues)
    worker = await _open(queues)
    try:
        sent = _messages(keys=10, per_key=20)
        await producer.publish(sent[:50])
        await producer.publish(sent[50:])
        consumer = worker.consumer("worker-1")
        got = await _drain(consumer, len(sent))
        assert len(got) == len(sent)
        assert sorted(d.body for d in got) == sorted(m.body for m in sent)
        for key, numbers in _in_key_order(got).items():
            assert numbers == list(range(20)), key
        assert {d.partition for d in got} <= set(range(PARTITIONS))
        assert len({d.partition for d in got}) > 1, "ten keys should spread over partitions"
        assert await consumer.fetch(100, 0.3) == []
        await consumer.close()
    finally:
        await producer.close()
        await worker.close()


async def test_one_key_always_goes_to_one_partition(queues: QueueFactory) -> None:
    queue = await _open(queues)
    try:
        await queue.publish([QueueMessage("same-key", str(n).encode()) for n in range(30)])
        consumer = queue.consumer("worker-1")
        got = await _drain(consumer, 30)
        assert len({d.partition for d in got}) == 1
        assert [int(d.body) for d in got] == list(range(30))
        positions = [d.position for d in got]
        assert positions == sorted(positions) and len(set(positions)) == 30
        await consumer.close()
    finally:
        await queue.close()


async def test_unacknowledged_messages_come_back_after_close_in_order(
    queues: QueueFactory,
) -> None:
    producer = await _open(queues)
    try:
        sent = _messages(keys=4, per_key=10)
        await producer.publish(sent)
        first_queue = await _open(queues)
        first = first_queue.consumer("worker-1")
        taken = await _drain(first, len(sent), ack=False)
        assert len(taken) == len(sent)
        # Only the first three messages of each key are done.
        done = [d for d in taken if int(d.body.decode().split(":")[1]) < 3]
        await first.ack(done)
        await first.close()
        await first_queue.close()

        second_queue = await _open(queues)
        second = second_queue.consumer("worker-2")
        again = await _drain(second, len(sent) - len(done))
        assert len(again) == len(sent) - len(done)
        for key, numbers in _in_key_order(again).items():
            assert numbers == list(range(3, 10)), key
        assert await second.fetch(100, 0.3) == []
        await second.close()
        await second_queue.close()
    finally:
        await producer.close()


async def test_a_consumer_does_not_hand_out_what_it_already_gave(queues: QueueFactory) -> None:
    queue = await _open(queues)
    try:
        await queue.publish(_messages(keys=3, per_key=5))
        consumer = queue.consumer("worker-1")
        taken = await _drain(consumer, 15, ack=False)
        assert len(taken) == 15
        assert await consumer.fetch(100, 0.3) == []
        await consumer.ack(taken)
        await consumer.close()
    finally:
        await queue.close()


async def test_two_consumers_share_the_partitions_without_overlap(queues: QueueFactory) -> None:
    producer = await _open(queues)
    one_queue, two_queue = await _open(queues), await _open(queues)
    one, two = one_queue.consumer("worker-1"), two_queue.consumer("worker-2")
    try:
        sent = _messages(keys=16, per_key=25)
        got: dict[str, list[Delivery]] = {"one": [], "two": []}

        async def keep_reading(name: str, consumer: QueueConsumer) -> None:
            for _ in range(80):
                if len(got["one"]) + len(got["two"]) >= len(sent):
                    return
                batch = await consumer.fetch(50, 0.25)
                if batch:
                    await consumer.ack(batch)
                    got[name] += batch

        # Both consumers are reading before the messages arrive, so both hold partitions.
        readers = asyncio.gather(keep_reading("one", one), keep_reading("two", two))
        await asyncio.sleep(1.0)
        for start in range(0, len(sent), 40):
            await producer.publish(sent[start : start + 40])
        await readers
        everything = got["one"] + got["two"]
        assert sorted(d.body for d in everything) == sorted(m.body for m in sent)
        keys_one = {d.key for d in got["one"]}
        keys_two = {d.key for d in got["two"]}
        assert not keys_one & keys_two, "a key was read by both consumers"
        for key, numbers in _in_key_order(everything).items():
            assert numbers == list(range(25)), key
    finally:
        await one.close()
        await two.close()
        for queue in (producer, one_queue, two_queue):
            await queue.close()


async def test_status_counts_the_backlog_until_messages_are_acknowledged(
    queues: QueueFactory,
) -> None:
    queue = await _open(queues)
    try:
        await queue.publish(_messages(keys=5, per_key=6))
        status = await _settled(queue, lambda backlog: backlog == 30)
        assert status.backlog == 30
        assert sorted(p.partition for p in status.partitions) == list(range(PARTITIONS))
        consumer = queue.consumer("worker-1")
        got = await _drain(consumer, 30)
        assert len(got) == 30
        status = await _settled(queue, lambda backlog: backlog == 0)
        assert status.backlog == 0
        await consumer.close()
    finally:
        await queue.close()


async def _settled(
    queue: IngestQueue, done: Callable[[int], bool], seconds: float = 15.0
) -> QueueStatus:
    """Brokers publish their statistics with a delay: ask until ``done(backlog)`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        status = await queue.status()
        if done(status.backlog) or loop.time() > deadline:
            return status
        await asyncio.sleep(0.25)


async def test_retention_is_applied_and_reported(queues: QueueFactory) -> None:
    queue = await _open(queues)
    try:
        lines = await queue.apply_retention(QueueRetention(hours=720, megabytes=1024))
        assert lines and all(isinstance(line, str) and line for line in lines)
        assert await queue.apply_retention(QueueRetention(hours=1, megabytes=10))
    finally:
        await queue.close()


async def test_an_unreachable_queue_refuses_to_publish(queues: QueueFactory) -> None:
    unreachable = queues.unreachable()
    if unreachable is None:
        pytest.skip(f"the {queues.backend} queue is a local file: it cannot be unreachable")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(QueueUnavailable):
        await unreachable.start()
        await unreachable.publish([QueueMessage("k", b"lost")])
    assert loop.time() - started < 30
    await unreachable.close()
