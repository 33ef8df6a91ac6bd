"""The Kafka queue backend for the contract suite and the Kafka tests: a real broker started by
``bash scripts/kafka up`` (127.0.0.1:9092, ``TESSERA_TEST_KAFKA_BOOTSTRAP`` points elsewhere).

Each test gets a topic of its own (created by the queue's ``start()``, as in production) and
the opener deletes it at the end; the broker then drops the group's offsets on it too.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from tessera.queue.kafka import KafkaIngestQueue
from tests.support.server import free_port
from tests.support.services import service_missing

KAFKA_BOOTSTRAP = os.environ.get("TESSERA_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
# The shortest session the broker accepts (group.min.session.timeout.ms, 6 s by default), so a
# killed consumer's partitions move within seconds in the crash test.
TEST_SESSION_SECONDS = 6.0


def unique_topic(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in name).strip("-")[-80:]
    return f"tessera-test-{cleaned}-{secrets.token_hex(4)}"


async def reachable_admin() -> Any:
    """A started admin client, or the test is skipped with one loud line saying why."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP, request_timeout_ms=5000)
    try:
        await admin.start()
        await admin.describe_cluster()
    except (KafkaError, OSError) as exc:
        await admin.close()
        service_missing(
            f"KAFKA NOT REACHABLE at {KAFKA_BOOTSTRAP} ({exc!r}); "
            "start it with `bash scripts/kafka up`"
        )
    return admin


@dataclass
class KafkaQueues:
    topic: str
    partitions: int
    backend: str = "kafka"

    def open(self, *, max_backlog_mb: int = 1024) -> KafkaIngestQueue:
        return KafkaIngestQueue(
            KAFKA_BOOTSTRAP,
            topic=self.topic,
            partitions=self.partitions,
            session_timeout_seconds=TEST_SESSION_SECONDS,
            max_backlog_mb=max_backlog_mb,
        )

    def unreachable(self) -> KafkaIngestQueue:
        return KafkaIngestQueue(
            f"127.0.0.1:{free_port()}", topic=self.topic, partitions=self.partitions
        )

    def environment(self) -> dict[str, str]:
        return {
            "TESSERA_QUEUE": "kafka",
            "KAFKA_BOOTSTRAP_SERVERS": KAFKA_BOOTSTRAP,
            "TESSERA_QUEUE_TOPIC": self.topic,
            "TESSERA_QUEUE_PARTITIONS": str(self.partitions),
        }


@asynccontextmanager
async def kafka_queue(name: str, place: Path, partitions: int) -> AsyncIterator[KafkaQueues]:
    admin = await reachable_admin()
    queues = KafkaQueues(unique_topic(name), partitions)
    try:
        yield queues
    finally:
        try:
            # A topic the test never started is simply not there (UNKNOWN_TOPIC in the answer).
            await admin.delete_topics([queues.topic])
        finally:
            await admin.close()


async def broker_retention_check_seconds() -> float:
    """How often the broker deletes by retention (``log.retention.check.interval.ms``): a test
    that wants to see retention at work waits at least this long."""
    admin = await reachable_admin()
    try:
        cluster = await admin.describe_cluster()
        broker = str(cluster["brokers"][0]["node_id"])
        (described,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, broker)]
        )
        (found,) = described.to_object()["resources"]
        entries = {e["config_names"]: e["config_value"] for e in found["config_entries"]}
        return int(entries["log.retention.check.interval.ms"]) / 1000
    finally:
        await admin.close()
