"""The ingest queue on Redis Streams (``TESSERA_QUEUE=redis``); its reader is in
``queue_consumer``.

Keys, under the installation's prefix: one stream per partition (``queue:{topic}:{n}``, entries
with a ``key`` and a ``body`` field) with one consumer group, ``workers``, created from the
stream's start; one lease per partition (``queue-lease:{topic}:{n}``: its reader, expiring); the
live consumers (``queue-workers:{topic}``: a sorted set scored by their last heartbeat).

Durability: ``publish`` returns once Redis answered every XADD, so a crash of a Tessera process
loses nothing after that. Whether Redis keeps the entries across its own crash or restart is its
persistence configuration: ``appendonly yes`` (AOF, ``appendfsync everysec`` or ``always``) for
zero loss; RDB snapshots alone lose what came after the last snapshot.

Positions: a stream id ``ms-seq`` is ``ms * 2**20 + seq``. Ids grow with publish order within a
stream, and so do positions while one stream takes fewer than 2**20 entries in one millisecond;
the number fits a signed 64-bit integer until 2039.

Retention: a stream cannot drop just its acknowledged entries, so trimming is by MINID, never past
the oldest pending entry nor the group's last-delivered id (so never an unacknowledged or
undelivered entry). The age limit is a MINID from Redis's clock; the size limit is approximated:
MEMORY USAGE against megabytes / partitions, the excess turned into a MINID by interpolating
between the first and last entry times, a few rounds at most.

Back-pressure: the streams' unprocessed entries (each group's lag plus its pending entries, one
pipelined XINFO GROUPS a second in the background) are bounded by ``max_backlog_mb``: ``publish``
raises QueueFull before passing it (``queue_backlog.BacklogGate``). Retention never removes them,
but Redis itself evicts keys under ``maxmemory`` with an ``allkeys-*`` policy:
``retention_risks`` says so (``noeviction`` or a ``volatile-*`` policy is needed).

The Redis client is the caller's (it may serve locks and caches too): ``close`` leaves it open.
It must answer bytes (``decode_responses=False``), as ``redis_client`` builds it.
"""

from __future__ import annotations

import asyncio
import builtins
import math
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tessera.queue.backlog import Backlog, BacklogGate
from tessera.queue.ports import (
    PartitionStatus,
    QueueMessage,
    QueueRetention,
    QueueStatus,
    QueueUnavailable,
    partition_of,
)
from tessera.queue.redis.consumer import (
    FAILURES,
    GROUP,
    LeaseScripts,
    RedisQueueConsumer,
    StreamId,
    stream_id,
)
from tessera.storage.redis.client import KeySpace

DEFAULT_RETENTION = QueueRetention(hours=720, megabytes=1024)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _id_text(entry: StreamId) -> str:
    return f"{entry[0]}-{entry[1]}"


class RedisIngestQueue:
    backend = "redis"

    def __init__(
        self,
        client: Redis,
        keys: KeySpace,
        *,
        topic: str = "tessera-ingest",
        partitions: int = 8,
        lease_seconds: float = 10.0,
        publish_timeout: float = 5.0,
        retention: QueueRetention = DEFAULT_RETENTION,
        max_backlog_mb: int = 1024,
    ) -> None:
        if partitions < 1 or lease_seconds <= 0 or publish_timeout <= 0:
            raise ValueError("partitions, lease and publish timeout must be positive")
        self.client = client
        self.topic = topic
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self.publish_timeout = publish_timeout
        self.streams = [keys.key("queue", f"{topic}:{n}") for n in range(partitions)]
        self.leases = [keys.key("queue-lease", f"{topic}:{n}") for n in range(partitions)]
        self.workers_key = keys.key("queue-workers", topic)
        # What ``trim`` trims by: the settings' limits, or the last ``apply_retention``.
        self.retention = retention
        self.lease_scripts = LeaseScripts.on(client)
        self._consumers: weakref.WeakSet[RedisQueueConsumer] = weakref.WeakSet()
        self.backlog_gate = BacklogGate(
            limit_bytes=max_backlog_mb * 1024 * 1024,
            measure=self._measure_backlog,
            what=f"Redis queue {topic!r}",
        )

    @asynccontextmanager
    async def answering(self, doing: str) -> AsyncIterator[None]:
        """Redis failures and silence past the publish timeout become QueueUnavailable (the
        message names the failure's kind only: a connection error can carry its address)."""
        try:
            async with asyncio.timeout(self.publish_timeout):
                yield
        except FAILURES as exc:
            raise QueueUnavailable(
                f"the Redis queue could not {doing}: {type(exc).__name__}"
            ) from exc

    async def start(self) -> None:
        async with self.answering("start"):
            pipe = self.client.pipeline(transaction=False)
            for stream in self.streams:
                pipe.xgroup_create(stream, GROUP, id="0", mkstream=True)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, ResponseError) and "BUSYGROUP" in str(result):
                continue
            if isinstance(result, Exception):
                raise QueueUnavailable(f"the Redis queue could not start: {result}") from result

    async def publish(self, messages: builtins.list[QueueMessage]) -> None:
        if not messages:
            return
        await self.backlog_gate.admit(messages)
        async with self.answering("keep the messages"):
            pipe = self.client.pipeline(transaction=False)
            for message in messages:
                stream = self.streams[partition_of(message.key, self.partitions)]
                pipe.xadd(stream, {b"key": message.key.encode(), b"body": message.body})
            await pipe.execute()

    def consumer(self, worker_id: str) -> RedisQueueConsumer:
        consumer = RedisQueueConsumer(self, worker_id)
        self._consumers.add(consumer)
        return consumer

    async def status(self) -> QueueStatus:
        async with self.answering("report its status"):
            backlogs = await self._backlogs()
            owners = await self.client.mget(self.leases)
        partitions = [
            PartitionStatus(
                partition=n,
                backlog=backlog,
                owner=_text(owner).rpartition("/")[0] if owner else None,
            )
            for n, (backlog, owner) in enumerate(zip(backlogs, owners, strict=True))
        ]
        return QueueStatus(
            backend=self.backend,
            topic=self.topic,
            partitions=partitions,
            details={
                "consumer_group": GROUP,
                "lease_seconds": self.lease_seconds,
                "retention_hours": self.retention.hours,
                "retention_megabytes": self.retention.megabytes,
            },
            backpressure=await self.backlog_gate.observed(),
        )

    async def _backlogs(self) -> builtins.list[int]:
        """Each stream's entries not yet acknowledged by the group: its lag (never delivered)
        plus its pending entries (delivered, not acknowledged); one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
        answers = await pipe.execute(raise_on_error=False)
        backlogs = []
        for stream, groups in zip(self.streams, answers, strict=True):
            group = self._group_of(groups)
            backlog = 0
            if group is not None:
                lag = group.get("lag")
                if lag is None:
                    # Redis cannot tell the lag after some deletions: count what is left.
                    after = "(" + _id_text(stream_id(group["last-delivered-id"]))
                    lag = len(await self.client.xrange(stream, after, "+") or [])
                backlog = int(lag) + int(group.get("pending") or 0)
            backlogs.append(backlog)
        return backlogs

    async def _measure_backlog(self) -> Backlog:
        async with self.answering("measure its backlog"):
            return Backlog(messages=sum(await self._backlogs()))

    @staticmethod
    def _group_of(groups: Any) -> dict[str, Any] | None:
        if isinstance(groups, Exception):
            return None  # no such stream yet: nothing published, nothing owed
        for group in groups:
            name = group["name"]
            if _text(name) == GROUP:
                return dict(group)
        return None

    async def apply_retention(self, retention: QueueRetention) -> builtins.list[str]:
        self.retention = retention
        removed = await self.trim()
        share = retention.megabytes / self.partitions
        lines = [
            f"redis streams '{self.topic}': acknowledged entries older than "
            f"{retention.hours:g} h are trimmed",
            f"redis streams '{self.topic}': each of {self.partitions} partitions is trimmed "
            f"toward {share:.1f} MB (estimated with MEMORY USAGE)",
            f"redis streams '{self.topic}': {removed} acknowledged entries trimmed now; "
            "unacknowledged and undelivered entries are never trimmed",
        ]
        try:
            config: dict[Any, Any] = dict(await self.client.config_get("appendonly"))
            aof = config.get(b"appendonly", config.get("appendonly", b"?"))
            lines.append(f"redis persistence: appendonly={_text(aof)} (zero loss needs 'yes')")
        except FAILURES:
            pass  # CONFIG is often disabled on managed Redis; the limits above still hold
        return lines

    async def retention_risks(self) -> builtins.list[str]:
        """Trimming never passes the oldest pending or undelivered entry (``_trim_stream``);
        what can still drop them is Redis evicting the stream keys under memory pressure."""
        try:
            async with self.answering("read its eviction policy"):
                config: dict[Any, Any] = dict(await self.client.config_get("maxmemory-policy"))
        except QueueUnavailable:
            return []  # CONFIG disabled (managed Redis): nothing this can tell
        policy = _text(config.get(b"maxmemory-policy", config.get("maxmemory-policy", b"")))
        if policy.startswith("allkeys-"):
            return [
                f"Redis evicts any key under memory pressure (maxmemory-policy={policy}), "
                "the queue's streams included: set `maxmemory-policy noeviction` (or a "
                "volatile-* policy) so a full Redis refuses writes instead of dropping "
                "unprocessed messages"
            ]
        return []

    async def read_retention(self) -> QueueRetention:
        """What ``trim`` trims by: the construction's retention (the settings, as the queue
        factory builds it) until ``apply_retention`` gives another; Redis itself holds none."""
        return self.retention

    async def trim(self) -> int:
        """Trim every partition to the retention last applied; the number of entries removed."""
        async with self.answering("read the clock"):
            seconds, micros = await self.client.time()
        now_ms = seconds * 1000 + micros // 1000
        age_limit = (max(0, now_ms - round(self.retention.hours * 3_600_000)), 0)
        budget = self.retention.megabytes * 1024 * 1024 / self.partitions
        removed = 0
        for stream in self.streams:
            async with self.answering("trim a stream"):
                removed += await self._trim_stream(stream, age_limit, budget)
        return removed

    async def _trim_stream(self, stream: str, age_limit: StreamId, budget: float) -> int:
        try:
            group = self._group_of(await self.client.xinfo_groups(stream))
        except ResponseError:
            return 0  # no such stream: the queue was never started here
        if group is None:
            return 0
        # Below both of these every entry was delivered and acknowledged. Entries delivered or
        # acknowledged meanwhile only make the bound more careful than it needs to be.
        safe = stream_id(group["last-delivered-id"])
        pending = await self.client.xpending(stream, GROUP)
        if pending["pending"]:
            safe = min(safe, stream_id(pending["min"]))
        trim = self.client.xtrim
        removed = int(await trim(stream, minid=_id_text(min(safe, age_limit)), approximate=False))
        for _ in range(3):
            used = await self.client.memory_usage(stream) or 0
            info = await self.client.xinfo_stream(stream)
            if used <= budget or not info["length"]:
                break
            first = stream_id(info["first-entry"][0])[0]
            last = stream_id(info["last-entry"][0])[0]
            excess = (used - budget) / used
            cut = (first + math.ceil(excess * (last - first + 1)), 0)
            step = int(await trim(stream, minid=_id_text(min(safe, cut)), approximate=False))
            removed += step
            if not step:
                break
        return removed

    async def close(self) -> None:
        await self.backlog_gate.close()
        for consumer in list(self._consumers):
            await consumer.close()
