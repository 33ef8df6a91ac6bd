"""The ingest queue on an Apache Kafka topic (aiokafka).

Kafka gives most of the port's promises itself: the producer's default partitioner (murmur2 of
the key, as in the Java client) keeps a key on one partition in every process, ``acks=all`` with
idempotence is the durable answer, and a consumer group hands each partition to one member and
moves it to another when that member leaves (``close``) or stops heartbeating (crash, after the
session timeout). What Kafka does not give is acknowledging single messages: it keeps one offset
per partition, so each consumer commits the offset just past the longest run of acknowledged
messages and remembers the rest until the gap before them is acknowledged too.

Retention: Kafka's own (``retention.ms``, ``retention.bytes``) deletes old segments whether or
not the group consumed them, so it must not be what bounds this topic. The topic is created (and
``apply_retention`` sets it) with both unlimited and ``cleanup.policy=delete`` (compaction would
drop a profile's older events under its key); Tessera removes processed records itself:
``trim`` (run by the worker processes) moves each partition's start offset with DeleteRecords,
never past the group's committed offset, to drop what is older than the retention hours or more
than the retention megabytes (per partition: divided by the partitions). The unprocessed backlog
(end offsets minus the committed ones, measured in the background) is bounded by back-pressure:
``publish`` raises QueueFull before passing ``max_backlog_mb``.

aiokafka ships no type information: its objects are ``Any`` here, behind narrow ignores.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.admin.records_to_delete import RecordsToDelete  # type: ignore[import-untyped]
from aiokafka.coordinator.protocol import (  # type: ignore[import-untyped]
    ConsumerProtocolMemberAssignment,
)

from tessera.queue.backlog import Backlog, BacklogGate, message_bytes
from tessera.queue.kafka.broker import broker_call, raise_for_codes, stop_quietly
from tessera.queue.kafka.consumer import KafkaQueueConsumer
from tessera.queue.ports import (
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
# What the broker must hold for the topic so that it never deletes a record by itself.
KEEP_EVERYTHING = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
DEFAULT_RETENTION = QueueRetention(hours=720, megabytes=1024)


class KafkaIngestQueue:
    """``retention`` is what ``trim`` keeps of processed records; new topics get
    ``KEEP_EVERYTHING`` (an existing topic keeps its own configs until ``apply_retention``) and
    three replicas, or one per broker on a smaller cluster."""

    backend = "kafka"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = "tessera-ingest",
        partitions: int = 8,
        publish_timeout: float = 5.0,
        session_timeout_seconds: float = 10.0,
        retention: QueueRetention = DEFAULT_RETENTION,
        max_backlog_mb: int = 1024,
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
        self.backlog_gate = BacklogGate(
            limit_bytes=max_backlog_mb * 1024 * 1024,
            measure=self._measure_backlog,
            what=f"kafka topic {topic}",
        )
        # Records this process published or fetched and their bytes: the average record size
        # that turns the retention megabytes into a number of records to keep.
        self.seen_records = 0
        self.seen_bytes = 0

    def saw(self, records: int, size: int) -> None:
        self.seen_records += records
        self.seen_bytes += size

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
        replicas = max(1, min(3, len(cluster["brokers"])))
        answer = await admin.create_topics(
            [NewTopic(self.topic, self.partitions, replicas, topic_configs=KEEP_EVERYTHING)]
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
        await self.backlog_gate.admit(messages)
        self.saw(len(messages), message_bytes(messages))
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

    async def _offsets_reader(self) -> Any:
        """A consumer outside the group, only to read partitions' offsets."""
        if self._offsets is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=f"{self.group}-status",
                request_timeout_ms=int(self.publish_timeout * 1000),
            )
            await reader.start()
            self._offsets = reader
        return self._offsets

    async def _positions(self, admin: Any) -> dict[Any, tuple[int, int, int | None]]:
        """Partition → (first offset, end offset, the group's committed offset or None)."""
        reader = await self._offsets_reader()
        parts = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        first = await reader.beginning_offsets(parts)
        end = await reader.end_offsets(parts)
        committed = await admin.list_consumer_group_offsets(self.group, partitions=parts)
        positions: dict[Any, tuple[int, int, int | None]] = {}
        for part in parts:
            done = committed.get(part)
            taken = None if done is None or done.offset < 0 else int(done.offset)
            positions[part] = (int(first[part]), int(end[part]), taken)
        return positions

    @staticmethod
    def _unprocessed(first: int, end: int, committed: int | None) -> int:
        start = first if committed is None else max(committed, first)
        return max(0, end - start)

    async def _measure_backlog(self) -> Backlog:
        async with self._call(f"measuring the backlog of {self.topic}"):
            positions = await self._positions(await self._admin_client())
        return Backlog(messages=sum(self._unprocessed(*found) for found in positions.values()))

    async def status(self) -> QueueStatus:
        async with self._call(f"reading the backlog of {self.topic}"):
            admin = await self._admin_client()
            positions = await self._positions(admin)
            owners = await self._owners(admin)
        rows = [
            PartitionStatus(part.partition, self._unprocessed(*found), owners.get(part.partition))
            for part, found in positions.items()
        ]
        details = {
            "group": self.group,
            "bootstrap_servers": self.bootstrap_servers,
            "retention_hours": self._retention.hours,
            "retention_megabytes": self._retention.megabytes,
        }
        return QueueStatus(
            self.backend, self.topic, rows, details, backpressure=await self.backlog_gate.observed()
        )

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

    async def _topic_configs(self, admin: Any) -> dict[str, dict[str, Any]]:
        """The topic's config entries (DescribeConfigs) by name."""
        resource = ConfigResource(ConfigResourceType.TOPIC, self.topic)
        (described,) = await admin.describe_configs([resource])
        (found,) = described.to_object()["resources"]
        raise_for_codes([found["error_code"]], f"describing {self.topic} configs")
        return {entry["config_names"]: entry for entry in found["config_entries"]}

    async def apply_retention(self, retention: QueueRetention) -> builtins.list[str]:
        async with self._call(f"setting the configs of {self.topic}"):
            admin = await self._admin_client()
            entries = await self._topic_configs(admin)
            # AlterConfigs replaces the topic's whole set: carry the other values set on it.
            kept = {
                name: e["config_value"]
                for name, e in entries.items()
                if e["config_source"] == DYNAMIC_TOPIC_CONFIG and not e["is_sensitive"]
            }
            altered = ConfigResource(
                ConfigResourceType.TOPIC, self.topic, {**kept, **KEEP_EVERYTHING}
            )
            answers = await admin.alter_configs([altered])
            raise_for_codes(
                (r["error_code"] for a in answers for r in a.to_object()["resources"]),
                f"altering {self.topic} configs",
            )
        self._retention = retention
        removed = await self.trim()
        share = retention.megabytes / self.partitions
        return [
            f"kafka topic {self.topic}: retention.ms=-1, retention.bytes=-1, "
            "cleanup.policy=delete (the broker deletes nothing by itself)",
            f"kafka topic {self.topic}: the workers delete processed records older than "
            f"{retention.hours:g} h or beyond {share:.1f} MB per partition ({retention.megabytes}"
            f" MB over {self.partitions} partitions); {removed} deleted now",
            f"kafka topic {self.topic}: unprocessed records are never deleted; publishing "
            f"refuses (503) past {self.backlog_gate.limit_bytes // (1024 * 1024)} MB of them "
            "(TESSERA_QUEUE_MAX_BACKLOG_MB)",
        ]

    async def read_retention(self) -> QueueRetention:
        """What ``trim`` deletes processed records by: the construction's retention (the
        settings, as the queue factory builds it) until ``apply_retention`` gives another. The
        broker's own retention must be unlimited: ``retention_risks`` checks that."""
        return self._retention

    async def retention_risks(self) -> builtins.list[str]:
        async with self._call(f"reading the configs of {self.topic}"):
            admin = await self._admin_client()
            (described,) = await admin.describe_topics([self.topic])
            if described["error_code"] == UNKNOWN_TOPIC or not described["partitions"]:
                return []  # no topic, nothing to lose; `tessera install` creates it safe
            raise_for_codes([described["error_code"]], f"describing {self.topic}")
            entries = await self._topic_configs(admin)
        values = {name: str(entry["config_value"]) for name, entry in entries.items()}
        risks = []
        for name in ("retention.ms", "retention.bytes"):
            if values.get(name, "-1") != "-1":
                risks.append(
                    f"kafka topic {self.topic} has {name}={values[name]}: the broker deletes "
                    "records past it whether or not a worker processed them; set it to -1 "
                    "(`tessera install` does)"
                )
        if "compact" in values.get("cleanup.policy", "delete"):
            risks.append(
                f"kafka topic {self.topic} has cleanup.policy={values['cleanup.policy']}: "
                "compaction drops older records of a key (a profile's earlier events); set "
                "it to delete (`tessera install` does)"
            )
        return risks

    async def trim(self) -> int:
        """Delete processed records past the retention (DeleteRecords, never beyond the
        group's committed offset); how many went."""
        per_partition = self._retention.megabytes * 1024 * 1024 / self.partitions
        # Records of the average size seen here; none seen: the size limit waits for some.
        average = self.seen_bytes / self.seen_records if self.seen_records else None
        cutoff_ms = round((time.time() - self._retention.hours * 3600) * 1000)
        async with self._call(f"trimming {self.topic}"):
            admin = await self._admin_client()
            positions = await self._positions(admin)
            reader = await self._offsets_reader()
            newer = await reader.offsets_for_times(dict.fromkeys(positions, cutoff_ms))
            cuts: dict[Any, RecordsToDelete] = {}
            for part, (first, end, committed) in positions.items():
                if committed is None:
                    continue  # the group never committed here: nothing is processed
                found = newer.get(part)
                cut = end if found is None else int(found.offset)
                if average is not None:
                    cut = max(cut, committed - int(per_partition // average))
                cut = min(cut, committed)
                if cut > first:
                    cuts[part] = RecordsToDelete(before_offset=cut)
            if cuts:
                await admin.delete_records(cuts)
        return sum(cut.before_offset - positions[part][0] for part, cut in cuts.items())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.backlog_gate.close()
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
