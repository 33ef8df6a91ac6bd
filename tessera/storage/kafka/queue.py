"""The ingest queue on an Apache Kafka topic (aiokafka).

Kafka gives most of the port's promises itself: the producer's default partitioner (murmur2 of
the key, as in the Java client) keeps a key on one partition in every process, ``acks=all`` with
idempotence is the durable answer, and a consumer group hands each partition to one member and
moves it to another when that member leaves (``close``) or stops heartbeating (crash, after the
session timeout). What Kafka does not give is acknowledging single messages: it keeps one offset
per partition, so each consumer commits the offset just past the longest run of acknowledged
messages and remembers the rest until the gap before them is acknowledged too.

aiokafka ships no type information: its objects are ``Any`` here, behind narrow ignores.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.coordinator.protocol import (  # type: ignore[import-untyped]
    ConsumerProtocolMemberAssignment,
)

from tessera.storage.kafka.broker import broker_call, raise_for_codes, stop_quietly
from tessera.storage.kafka.consumer import KafkaQueueConsumer
from tessera.storage.queue_ports import (
    PartitionStatus,
    QueueMessage,
    QueueRetention,
    QueueStatus,
    QueueUnavailable,
)

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC = 3
# DescribeConfigs' source of a value set on the topic itself (not a broker default).
DYNAMIC_TOPIC_CONFIG = 1


class KafkaIngestQueue:
    """``retention``, when given, goes into the topic's configs when ``start`` creates it (an
    existing topic keeps its own until ``apply_retention``). New topics get three replicas, or
    one per broker on a smaller cluster."""

    backend = "kafka"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = "tessera-ingest",
        partitions: int = 8,
        publish_timeout: float = 5.0,
        session_timeout_seconds: float = 10.0,
        retention: QueueRetention | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group = f"{topic}-workers"
        self.partitions = partitions
        self.publish_timeout = publish_timeout
        self.session_timeout_seconds = session_timeout_seconds
        self._retention = retention
        self._admin: Any = None
        self._producer: Any = None
        # A consumer outside the group, only to read partitions' first and end offsets.
        self._offsets: Any = None
        self._consumers: list[KafkaQueueConsumer] = []
        self._started = False
        self._closed = False

    def _call(self, what: str) -> Any:
        return broker_call(self.bootstrap_servers, what, self.publish_timeout)

    async def _admin_client(self) -> Any:
        if self._closed:
            raise QueueUnavailable(f"kafka queue on {self.topic} is closed")
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                client_id=f"{self.group}-admin",
                request_timeout_ms=int(self.publish_timeout * 1000),
            )
            await self._admin.start()
        return self._admin

    async def start(self) -> None:
        if self._started:
            return
        try:
            async with self._call(f"creating topic {self.topic}"):
                admin = await self._admin_client()
                await self._ensure_topic(admin)
                self._producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=f"{self.group}-producer",
                    acks="all",
                    enable_idempotence=True,
                    request_timeout_ms=int(self.publish_timeout * 1000),
                )
                await self._producer.start()
        except QueueUnavailable:
            # Half-started clients are dropped: the next start() (a later publish) begins anew.
            await self._drop_clients()
            raise
        self._started = True

    async def _ensure_topic(self, admin: Any) -> None:
        cluster = await admin.describe_cluster()
        configs: dict[str, str] = {}
        if self._retention is not None:
            configs = self._retention_configs(self._retention, self.partitions)
        replicas = max(1, min(3, len(cluster["brokers"])))
        answer = await admin.create_topics(
            [NewTopic(self.topic, self.partitions, replicas, topic_configs=configs)]
        )
        raise_for_codes(
            (code for _, code, *_ in answer.topic_errors if code != TOPIC_ALREADY_EXISTS),
            f"creating topic {self.topic}",
        )
        # The metadata of a topic created a moment ago may not be on every broker yet.
        while True:
            (described,) = await admin.describe_topics([self.topic])
            if described["error_code"] == 0 and described["partitions"]:
                break
            await asyncio.sleep(0.1)
        found = len(described["partitions"])
        if found != self.partitions:
            log.warning(
                "kafka topic %s already has %d partitions (configured %d); using %d",
                self.topic,
                found,
                self.partitions,
                found,
            )
            self.partitions = found

    async def publish(self, messages: builtins.list[QueueMessage]) -> None:
        if not messages:
            return
        await self.start()
        async with self._call(f"publishing {len(messages)} messages to {self.topic}"):
            # send() only queues a message into its partition's batch; waiting on all the
            # answers together lets one request carry a whole batch.
            answers = [
                await self._producer.send(self.topic, value=m.body, key=m.key.encode())
                for m in messages
            ]
            await asyncio.gather(*answers)

    def consumer(self, worker_id: str) -> KafkaQueueConsumer:
        consumer = KafkaQueueConsumer(self, worker_id)
        self._consumers.append(consumer)
        return consumer

    async def status(self) -> QueueStatus:
        async with self._call(f"reading the backlog of {self.topic}"):
            admin = await self._admin_client()
            if self._offsets is None:
                self._offsets = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=f"{self.group}-status",
                    request_timeout_ms=int(self.publish_timeout * 1000),
                )
                await self._offsets.start()
            parts = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            first = await self._offsets.beginning_offsets(parts)
            end = await self._offsets.end_offsets(parts)
            committed = await admin.list_consumer_group_offsets(self.group, partitions=parts)
            owners = await self._owners(admin)
        rows = []
        for part in parts:
            done = committed.get(part)
            start = first[part] if done is None or done.offset < 0 else done.offset
            backlog = max(0, end[part] - max(start, first[part]))
            rows.append(PartitionStatus(part.partition, backlog, owners.get(part.partition)))
        details = {"group": self.group, "bootstrap_servers": self.bootstrap_servers}
        return QueueStatus(self.backend, self.topic, rows, details)

    async def _owners(self, admin: Any) -> dict[int, str]:
        """Partition → client id (the worker id) of the member reading it; one request to the
        group coordinator. Empty when the group is rebalancing or not there yet."""
        (answer,) = await admin.describe_consumer_groups([self.group])
        owners: dict[int, str] = {}
        for group in answer.to_object()["groups"]:
            if group["error_code"] != 0:
                continue
            for member in group["members"]:
                if not member["member_assignment"]:
                    continue
                assignment = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
                for topic, numbers in assignment.assignment:
                    if topic == self.topic:
                        owners.update(dict.fromkeys(numbers, str(member["client_id"])))
        return owners

    @staticmethod
    def _retention_configs(retention: QueueRetention, partitions: int) -> dict[str, str]:
        return {
            "retention.ms": str(round(retention.hours * 3600 * 1000)),
            "retention.bytes": str(retention.megabytes * 1024 * 1024 // partitions),
        }

    async def _topic_configs(self, admin: Any) -> dict[str, dict[str, Any]]:
        """The topic's config entries (DescribeConfigs) by name."""
        resource = ConfigResource(ConfigResourceType.TOPIC, self.topic)
        (described,) = await admin.describe_configs([resource])
        (found,) = described.to_object()["resources"]
        raise_for_codes([found["error_code"]], f"describing {self.topic} configs")
        return {entry["config_names"]: entry for entry in found["config_entries"]}

    async def apply_retention(self, retention: QueueRetention) -> builtins.list[str]:
        limits = self._retention_configs(retention, self.partitions)
        async with self._call(f"setting the retention of {self.topic}"):
            admin = await self._admin_client()
            entries = await self._topic_configs(admin)
            # AlterConfigs replaces the topic's whole set: carry the other values set on it.
            kept = {
                name: e["config_value"]
                for name, e in entries.items()
                if e["config_source"] == DYNAMIC_TOPIC_CONFIG and not e["is_sensitive"]
            }
            segment = entries.get("segment.bytes", {}).get("config_value")
            altered = ConfigResource(ConfigResourceType.TOPIC, self.topic, {**kept, **limits})
            answers = await admin.alter_configs([altered])
            raise_for_codes(
                (r["error_code"] for a in answers for r in a.to_object()["resources"]),
                f"altering {self.topic} configs",
            )
        self._retention = retention
        lines = [
            f"kafka topic {self.topic}: retention.ms={limits['retention.ms']}, "
            f"retention.bytes={limits['retention.bytes']} per partition ({self.partitions} "
            f"partitions; Kafka limits the size of each partition, {retention.megabytes} MB "
            "in all)"
        ]
        if segment is not None and int(segment) > int(limits["retention.bytes"]):
            lines.append(
                f"kafka topic {self.topic}: segment.bytes={segment} is larger than that; Kafka "
                "deletes whole closed segments, so a partition may keep up to one segment more"
            )
        return lines

    async def read_retention(self) -> QueueRetention | None:
        """The limits the broker applies to the topic (set on it, or the broker's defaults),
        ``retention.bytes`` times the topic's partitions back to megabytes. None when the
        topic does not exist or a limit is unlimited (-1: Kafka's default for the size)."""
        async with self._call(f"reading the retention of {self.topic}"):
            admin = await self._admin_client()
            (described,) = await admin.describe_topics([self.topic])
            if described["error_code"] == UNKNOWN_TOPIC or not described["partitions"]:
                return None
            raise_for_codes([described["error_code"]], f"describing {self.topic}")
            entries = await self._topic_configs(admin)
        values = {name: entry["config_value"] for name, entry in entries.items()}
        milliseconds = int(values.get("retention.ms") or -1)
        per_partition = int(values.get("retention.bytes") or -1)
        if milliseconds < 0 or per_partition < 0:
            return None
        # apply_retention divides by the partitions, rounding down: rounding back undoes it.
        total = per_partition * len(described["partitions"])
        return QueueRetention(
            hours=milliseconds / 3_600_000, megabytes=round(total / (1024 * 1024))
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for consumer in self._consumers:
            await consumer.close()
        await self._drop_clients()

    async def _drop_clients(self) -> None:
        for name, client in (("producer", self._producer), ("status reader", self._offsets)):
            if client is not None:
                await stop_quietly(client.stop(), f"{self.topic} {name}", self.publish_timeout)
        if self._admin is not None:
            await stop_quietly(self._admin.close(), f"{self.topic} admin", self.publish_timeout)
        self._producer = self._offsets = self._admin = None
        self._started = False
