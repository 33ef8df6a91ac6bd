"""What only the Kafka queue does, on a real broker (``bash scripts/kafka up``): the topic it
creates, the retention it sets (read back with the admin client), a rebalance that must not
hand a surviving worker's unfinished messages out again, and a worker killed outright.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)

from tessera.queue.kafka import KafkaIngestQueue, KafkaQueueConsumer
from tessera.queue.ports import Delivery, QueueMessage, QueueRetention
from tests.support.queues import risks_settled
from tests.support.queues_kafka import (
    KAFKA_BOOTSTRAP,
    TEST_SESSION_SECONDS,
    KafkaQueues,
    kafka_queue,
    reachable_admin,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def queues(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KafkaQueues]:
    async with kafka_queue(request.node.name, tmp_path, 3) as factory:
        yield factory


@pytest.fixture
async def admin() -> AsyncIterator[Any]:
    client = await reachable_admin()
    yield client
    await client.close()


async def topic_configs(admin: Any, topic: str) -> dict[str, str]:
    (answer,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    (resource,) = answer.to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}


async def settled_configs(admin: Any, topic: str, name: str, value: str) -> dict[str, str]:
    """The topic's configs once the broker shows ``name=value``: a change goes through the
    KRaft controller and reaches the broker's metadata a moment later."""
    for _ in range(40):
        configs = await topic_configs(admin, topic)
        if configs.get(name) == value:
            break
        await asyncio.sleep(0.25)
    return configs


def messages(keys: int, per_key: int) -> list[QueueMessage]:
    return [
        QueueMessage(f"key-{k}", f"key-{k}:{n}".encode())
        for n in range(per_key)
        for k in range(keys)
    ]


def number(delivery: Delivery) -> int:
    return int(delivery.body.decode().split(":")[1])


async def take(consumer: KafkaQueueConsumer, count: int, rounds: int = 60) -> list[Delivery]:
    got: list[Delivery] = []
    for _ in range(rounds):
        if len(got) >= count:
            break
        got += await consumer.fetch(100, 0.5)
    return got


@asynccontextmanager
async def two_workers(
    queues: KafkaQueues,
) -> AsyncIterator[tuple[KafkaIngestQueue, KafkaQueueConsumer, KafkaQueueConsumer]]:
    """A producer and two workers' consumers of one topic, each on its own queue client."""
    producer, first_queue, second_queue = queues.open(), queues.open(), queues.open()
    for queue in (producer, first_queue, second_queue):
        await queue.start()
    first = first_queue.consumer("worker-first")
    second = second_queue.consumer("worker-second")
    try:
        yield producer, first, second
    finally:
        await first.close()
        await second.close()
        for queue in (producer, first_queue, second_queue):
            await queue.close()


async def test_start_creates_the_topic_with_its_partitions_and_no_broker_retention(
    queues: KafkaQueues, admin: Any
) -> None:
    queue = KafkaIngestQueue(
        KAFKA_BOOTSTRAP,
        topic=queues.topic,
        partitions=3,
        retention=QueueRetention(hours=2, megabytes=9),
    )
    await queue.start()
    try:
        (described,) = await admin.describe_topics([queues.topic])
        assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2]
        # The broker deletes nothing by itself (it would, consumed or not); the retention
        # given is what the workers' trim deletes processed records by.
        configs = await settled_configs(admin, queues.topic, "retention.ms", "-1")
        assert configs["retention.ms"] == "-1"
        assert configs["retention.bytes"] == "-1"
        assert configs["cleanup.policy"] == "delete"
        assert await queue.read_retention() == QueueRetention(hours=2, megabytes=9)
        # A second start (another process) finds the topic there and keeps it as it is.
        again = queues.open()
        await again.start()
        await again.close()
        (described,) = await admin.describe_topics([queues.topic])
        assert len(described["partitions"]) == 3
    finally:
        await queue.close()


async def test_apply_retention_turns_the_brokers_retention_off_keeping_other_settings(
    queues: KafkaQueues, admin: Any
) -> None:
    queue = queues.open()
    await queue.start()
    try:
        # As an older Tessera's install left it, beside a setting of the operator's own.
        custom = ConfigResource(
            ConfigResourceType.TOPIC,
            queues.topic,
            {"max.message.bytes": "2000000", "retention.ms": "3600000"},
        )
        await admin.alter_configs([custom])
        await settled_configs(admin, queues.topic, "max.message.bytes", "2000000")
        assert await risks_settled(queue, 1) != []
        lines = await queue.apply_retention(QueueRetention(hours=720, megabytes=30))
        configs = await settled_configs(admin, queues.topic, "retention.ms", "-1")
        assert configs["retention.bytes"] == "-1"
        assert configs["max.message.bytes"] == "2000000"
        assert "retention.ms=-1, retention.bytes=-1, cleanup.policy=delete" in lines[0]
        assert "beyond 10.0 MB per partition (30 MB over 3 partitions)" in lines[1]
        assert await risks_settled(queue, 0) == []
    finally:
        await queue.close()


async def test_trim_deletes_processed_records_only(queues: KafkaQueues, admin: Any) -> None:
    """Past the retention, DeleteRecords moves each partition's start up to the committed
    offset and never beyond: the unprocessed records stay readable."""
    queue = KafkaIngestQueue(
        KAFKA_BOOTSTRAP,
        topic=queues.topic,
        partitions=1,
        retention=QueueRetention(hours=1 / 3600, megabytes=1024),
    )
    await queue.start()
    try:
        await queue.publish([QueueMessage("k", str(n).encode()) for n in range(100)])
        consumer = queue.consumer("worker-1")
        taken: list[Delivery] = []
        while len(taken) < 60:
            taken += await consumer.fetch(60 - len(taken), 0.5)
        await consumer.ack(taken)
        await consumer.close()
        await asyncio.sleep(1.5)  # past the one-second retention
        assert await queue.trim() == 60
        assert await queue.trim() == 0
        status = await queue.status()
        assert status.backlog == 40
        later = queues.open()
        await later.start()
        rest = later.consumer("worker-2")
        got: list[Delivery] = []
        while len(got) < 40:
            batch = await rest.fetch(100, 0.5)
            await rest.ack(batch)
            got += batch
        assert [int(d.body) for d in got] == list(range(60, 100))
        await rest.close()
        await later.close()
    finally:
        await queue.close()


async def test_the_committed_offset_waits_for_a_gap_to_be_acknowledged(
    queues: KafkaQueues,
) -> None:
    queue = queues.open()
    await queue.start()
    consumer = queue.consumer("worker-1")
    try:
        await queue.publish([QueueMessage("one-key", str(n).encode()) for n in range(10)])
        got = await take(consumer, 10)
        assert [int(d.body) for d in got] == list(range(10))
        # Acknowledged out of order: Kafka keeps one offset, so nothing can be committed yet.
        await consumer.ack(got[5:])
        assert (await queue.status()).backlog == 10
        await consumer.ack(got[:3])
        assert (await queue.status()).backlog == 7
        await consumer.close()

        # What lay after the gap comes back with it: Kafka has no per-message acknowledgement.
        again = queue.consumer("worker-2")
        later = await take(again, 7)
        assert [int(d.body) for d in later] == list(range(3, 10))
        await again.ack(later)
        assert (await queue.status()).backlog == 0
        await again.close()
    finally:
        await queue.close()


async def test_a_rebalance_does_not_hand_a_workers_unfinished_messages_out_again(
    queues: KafkaQueues,
) -> None:
    async with two_workers(queues) as (producer, first, second):
        sent = messages(keys=9, per_key=4)
        await producer.publish(sent)
        held = await take(first, len(sent))
        assert len(held) == len(sent) and first.partitions == [0, 1, 2]
        status = await producer.status()
        assert {p.owner for p in status.partitions} == {"worker-first"}

        # The second worker joins; the first takes part in the rebalance through its fetches.
        joining = asyncio.ensure_future(take(second, 1, rounds=40))
        again: list[Delivery] = []
        for _ in range(80):
            if len(first.partitions) < 3 and joining.done():
                break
            again += await first.fetch(100, 0.25)
        moved = await joining
        assert len(first.partitions) < 3, "the second worker never got a partition"
        assert again == [], "the first worker handed out its unfinished messages twice"

        # The second worker reads the moved partitions from their last commit (none yet).
        moved += await take(second, len(sent), rounds=4)
        moved_partitions = {d.partition for d in moved}
        assert moved_partitions == set(second.partitions)
        assert sorted(d.body for d in moved) == sorted(
            d.body for d in held if d.partition in moved_partitions
        )
        # Acknowledging everything: only what the first worker still owns counts from it.
        await first.ack(held)
        await second.ack(moved)
        status = await producer.status()
        for _ in range(40):
            if status.backlog == 0:
                break
            await asyncio.sleep(0.25)
            status = await producer.status()
        assert status.backlog == 0
        owners = {p.partition: p.owner for p in status.partitions}
        assert {owners[n] for n in second.partitions} == {"worker-second"}
        assert {owners[n] for n in first.partitions} == {"worker-first"}


async def test_a_rebalance_waits_for_the_worker_to_finish_and_commits_before_moving_on(
    queues: KafkaQueues,
) -> None:
    """The first worker finishes its batch while the second joins: its partitions move only
    once what it did is committed, so the second is handed none of those messages again."""
    async with two_workers(queues) as (producer, first, second):
        sent = messages(keys=9, per_key=4)
        await producer.publish(sent)
        held = await take(first, len(sent))
        assert len(held) == len(sent) and first.partitions == [0, 1, 2]

        joining = asyncio.ensure_future(take(second, 1, rounds=16))
        # Long enough for the group to be rebalancing, far less than the wait allowed.
        await asyncio.sleep(2.0)
        await first.ack(held)
        assert await joining == [], "messages the first worker had finished were handed out"
        again = await take(first, 1, rounds=4)
        assert again == []
        assert second.partitions, "the second worker got no partition"
        assert sorted(first.partitions + second.partitions) == [0, 1, 2]
        assert (await producer.status()).backlog == 0


CRASHING_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from tessera.queue.kafka import KafkaIngestQueue

    async def main(bootstrap, topic, session, expected):
        queue = KafkaIngestQueue(
            bootstrap, topic=topic, partitions=3, session_timeout_seconds=session
        )
        await queue.start()
        consumer = queue.consumer("worker-crashing")
        got = []
        for _ in range(60):
            if len(got) >= expected:
                break
            got += await consumer.fetch(100, 0.5)
        # The first two messages of every key are done; the rest never are.
        await consumer.ack([d for d in got if int(d.body.decode().split(":")[1]) < 2])
        print(len(got), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
    """
)


async def test_a_killed_worker_loses_its_partitions_and_its_unfinished_messages_come_back(
    queues: KafkaQueues, tmp_path: Path
) -> None:
    producer = queues.open()
    await producer.start()
    sent = messages(keys=6, per_key=5)
    await producer.publish(sent)
    script = tmp_path / "crashing_worker.py"
    script.write_text(CRASHING_WORKER)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        KAFKA_BOOTSTRAP,
        queues.topic,
        str(TEST_SESSION_SECONDS),
        str(len(sent)),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
    )
    survivor_queue = queues.open()
    survivor = survivor_queue.consumer("worker-survivor")
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert int(line) == len(sent)
        # SIGKILL: no LeaveGroup, no last commit; the group notices only by the silence.
        child.send_signal(signal.SIGKILL)
        await child.wait()

        again = await take(survivor, len(sent) - 12)
        assert len(again) == len(sent) - 12
        by_key: dict[str, list[int]] = {}
        for delivery in again:
            by_key.setdefault(delivery.key, []).append(number(delivery))
        assert by_key == {f"key-{k}": [2, 3, 4] for k in range(6)}
        assert survivor.partitions == [0, 1, 2]
        await survivor.ack(again)
        assert await survivor.fetch(100, 0.3) == []
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await survivor.close()
        await survivor_queue.close()
        await producer.close()
