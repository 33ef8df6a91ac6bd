"""The Redis Streams queue's reader (``RedisQueueConsumer``): partition leases, fair share,
takeover of a crashed reader's entries, acknowledgement.

A partition is read by the holder of its lease only (SET NX with an expiry, renewed by
compare-and-expire every third of the lease from a background task while the consumer lives),
so a crashed consumer loses its partitions after ``lease_seconds``. Consumers heartbeat into a
sorted set (scored with Redis's clock) and each takes at most ceil(partitions / live consumers);
one above that share gives partitions back once nothing it handed out from them is
unacknowledged. A holder that stalls past its lease may overlap with the next holder until it
notices; the group still hands each new entry to one of them only.

Because one holder at a time reads a stream, the group's consumer name is the same for every
holder (``holder``): a new holder first reads that name's pending entries (ID ``0``: what the
previous holder fetched and never acknowledged, in stream order, marked redelivered), then new
ones (ID ``>``). No XCLAIM and no idle-time guessing. Each partition keeps a marker of how far
its pending list was read, so one consumer never hands out an unacknowledged entry twice.

``ack`` is XACK even when the lease was lost meanwhile: the work is done; if the new holder got
the entry again, processing it twice is harmless (event ids are idempotency keys), and skipping
the XACK would only cause one more redelivery.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
import secrets
from collections import defaultdict
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from tessera.queue.lease_renewal import start_renewal
from tessera.queue.ports import Delivery

log = logging.getLogger(__name__)

GROUP = "workers"
READER = "holder"
FAILURES = (RedisError, OSError, TimeoutError)
# A waiting fetch returns at least this often, so its consumer rebalances while idle.
LONGEST_BLOCK_S = 1.0
_SEQ_BITS = 20

# KEYS: lease keys; ARGV: owner, lease ms, how many to take. Answers the 1-based indexes taken.
_TAKE = """
local taken = {}
for i = 1, #KEYS do
  if #taken >= tonumber(ARGV[3]) then break end
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then taken[#taken + 1] = i end
end
return taken
"""
# KEYS: lease keys; ARGV: owner, lease ms. Extends those still held; answers their indexes.
_RENEW = """
local held = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    held[#held + 1] = i
  end
end
return held
"""
# KEYS: lease keys; ARGV: owner. Deletes those still held.
_RELEASE = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 0
"""
# KEYS: the live-consumer set; ARGV: member, staleness in s, key expiry in s. Redis's clock, so
# consumers on hosts whose clocks differ still agree on who is live. Answers the live count.
_HEARTBEAT = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZADD', KEYS[1], seconds, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', seconds - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class LeaseScripts:
    take: AsyncScript
    renew: AsyncScript
    release: AsyncScript
    heartbeat: AsyncScript

    @classmethod
    def on(cls, client: Redis) -> LeaseScripts:
        register = client.register_script
        return cls(register(_TAKE), register(_RENEW), register(_RELEASE), register(_HEARTBEAT))


StreamId = tuple[int, int]


def stream_id(raw: bytes | str) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def stream_position(raw: bytes | str) -> int:
    """``ms * 2**20 + seq``: grows with the stream id (see the queue module on its range)."""
    ms, seq = stream_id(raw)
    return (ms << _SEQ_BITS) + seq


def _entries(reply: Any) -> builtins.list[tuple[bytes, builtins.list[tuple[bytes, Any]]]]:
    """XREADGROUP's answer as (stream, entries) pairs, whichever protocol the client speaks."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [
            (name, list(value[0] if value and isinstance(value[0], list) else value))
            for name, value in reply.items()
        ]
    return [(name, list(found)) for name, found in reply]


class LeasedStreams(Protocol):
    """What a consumer uses of its queue (``RedisIngestQueue`` is one), declared here so the
    consumer does not import the module that imports it."""

    client: Redis
    topic: str
    partitions: int
    lease_seconds: float
    publish_timeout: float
    streams: builtins.list[str]
    leases: builtins.list[str]
    workers_key: str
    lease_scripts: LeaseScripts

    def answering(self, doing: str) -> AbstractAsyncContextManager[None]: ...


class RedisQueueConsumer:
    def __init__(self, queue: LeasedStreams, worker_id: str) -> None:
        self._queue = queue
        self.worker_id = worker_id
        # The random part tells this consumer's leases from an earlier one of the same worker.
        self._owner = f"{worker_id}/{secrets.token_hex(6)}"
        self._lease_ms = max(1, round(queue.lease_seconds * 1000))
        self._owned: set[int] = set()
        # Partition → the pending id to read after (b"0": from the start), absent once read.
        self._pending_after: dict[int, bytes] = {}
        # Entries read past max_messages, handed out by the next fetch.
        self._buffer: dict[int, builtins.list[Delivery]] = defaultdict(list)
        self._unacked: dict[int, set[str]] = defaultdict(set)
        self._renewal: asyncio.Task[None] | None = None
        self._closed = False

    async def fetch(self, max_messages: int, wait_seconds: float) -> builtins.list[Delivery]:
        if self._closed or max_messages <= 0:
            return []
        if self._renewal is None:
            self._renewal = start_renewal(self, self._queue.lease_seconds / 3, FAILURES)
        async with self._queue.answering("hand out messages"):
            await self._rebalance()
            got: builtins.list[Delivery] = []
            for partition in sorted(self._owned):
                spill = self._buffer.pop(partition, [])
                room = max_messages - len(got)
                got += spill[:room]
                if spill[room:]:
                    self._buffer[partition] = spill[room:]
            for partition in sorted(self._owned):
                while len(got) < max_messages and partition in self._pending_after:
                    got += await self._read_pending(partition, max_messages - len(got))
            if len(got) < max_messages:
                got += await self._read_new(max_messages - len(got), 0 if got else wait_seconds)
        if not self._owned and wait_seconds > 0:
            await asyncio.sleep(min(wait_seconds, LONGEST_BLOCK_S))
        got.sort(key=lambda delivery: delivery.partition)
        for delivery in got:
            self._unacked[delivery.partition].add(delivery.handle)
        return got

    async def _read_pending(self, partition: int, count: int) -> builtins.list[Delivery]:
        stream = self._queue.streams[partition]
        after = self._pending_after[partition]
        reply = await self._queue.client.xreadgroup(GROUP, READER, {stream: after}, count=count)
        entries = [entry for _name, found in _entries(reply) for entry in found]
        if not entries:
            del self._pending_after[partition]
            return []
        self._pending_after[partition] = entries[-1][0]
        out, vanished = [], []
        for entry_id, fields in entries:
            if not fields:
                vanished.append(entry_id)  # deleted by hand while pending: nothing to deliver
            elif entry_id.decode() not in self._unacked[partition]:
                out.append(_delivery(partition, entry_id, fields, redelivered=True))
        if vanished:
            await self._queue.client.xack(stream, GROUP, *vanished)
        return out

    async def _read_new(self, count: int, wait_seconds: float) -> builtins.list[Delivery]:
        queue = self._queue
        readable = [p for p in sorted(self._owned) if p not in self._pending_after]
        if not readable:
            return []
        wait = min(wait_seconds, LONGEST_BLOCK_S, queue.publish_timeout / 2)
        block = max(0, round(wait * 1000)) or None  # BLOCK 0 would wait forever
        streams: dict[Any, Any] = {queue.streams[p]: ">" for p in readable}
        reply = await queue.client.xreadgroup(GROUP, READER, streams, count=count, block=block)
        by_stream = {queue.streams[p].encode(): p for p in readable}
        read = sorted(
            (
                _delivery(by_stream[name], entry_id, fields, redelivered=False)
                for name, found in _entries(reply)
                for entry_id, fields in found
            ),
            key=lambda delivery: delivery.partition,
        )
        # COUNT applies per stream: what is over the limit waits for the next fetch.
        for delivery in read[count:]:
            self._buffer[delivery.partition].append(delivery)
        return read[:count]

    async def ack(self, deliveries: builtins.list[Delivery]) -> None:
        if not deliveries:
            return
        done: dict[int, builtins.list[str]] = defaultdict(list)
        for delivery in deliveries:
            done[delivery.partition].append(delivery.handle)
        async with self._queue.answering("acknowledge"):
            pipe = self._queue.client.pipeline(transaction=False)
            for partition, ids in done.items():
                pipe.xack(self._queue.streams[partition], GROUP, *ids)
            await pipe.execute()
        for partition, ids in done.items():
            self._unacked[partition].difference_update(ids)

    async def _rebalance(self) -> None:
        queue = self._queue
        live = await self.heartbeat()
        share = math.ceil(queue.partitions / max(1, live))
        await self.renew()
        extra = len(self._owned) - share
        if extra > 0:
            idle = [
                p
                for p in sorted(self._owned, reverse=True)
                if not self._unacked[p] and not self._buffer.get(p)
            ][:extra]
            if idle:
                await queue.lease_scripts.release(
                    keys=[queue.leases[p] for p in idle], args=[self._owner]
                )
                for partition in idle:
                    self._lose(partition)
        elif extra < 0:
            free = [p for p in range(queue.partitions) if p not in self._owned]
            keys = [queue.leases[p] for p in free]
            taken = await queue.lease_scripts.take(
                keys=keys, args=[self._owner, self._lease_ms, -extra]
            )
            for index in taken:
                partition = free[int(index) - 1]
                self._owned.add(partition)
                self._pending_after[partition] = b"0"

    @property
    def closed(self) -> bool:
        return self._closed

    async def keep_alive(self) -> None:
        await self.heartbeat()
        await self.renew()

    async def heartbeat(self) -> int:
        queue = self._queue
        stale = queue.lease_seconds
        args: list[str | float] = [self._owner, stale, math.ceil(stale * 3)]
        return int(await queue.lease_scripts.heartbeat(keys=[queue.workers_key], args=args))

    async def renew(self) -> None:
        owned = sorted(self._owned)
        if not owned:
            return
        queue = self._queue
        keys = [queue.leases[p] for p in owned]
        held = {
            owned[int(i) - 1]
            for i in await queue.lease_scripts.renew(keys=keys, args=[self._owner, self._lease_ms])
        }
        for partition in owned:
            if partition not in held and partition in self._owned:
                log.warning("partition %d of '%s' expired under its reader", partition, queue.topic)
                self._lose(partition)

    def _lose(self, partition: int) -> None:
        # What was read from it stays pending under the group: its next holder gets it again.
        self._owned.discard(partition)
        self._pending_after.pop(partition, None)
        self._buffer.pop(partition, None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._renewal is not None:
            self._renewal.cancel()
        queue, owned = self._queue, sorted(self._owned)
        for partition in owned:
            self._lose(partition)
        try:
            async with asyncio.timeout(queue.publish_timeout):
                if owned:
                    keys = [queue.leases[p] for p in owned]
                    await queue.lease_scripts.release(keys=keys, args=[self._owner])
                await queue.client.zrem(queue.workers_key, self._owner)
        except FAILURES as exc:
            log.warning(
                "could not give partitions back (they expire with their lease): %s",
                type(exc).__name__,
            )


def _delivery(partition: int, entry_id: bytes, fields: Any, *, redelivered: bool) -> Delivery:
    return Delivery(
        partition=partition,
        position=stream_position(entry_id),
        key=fields[b"key"].decode(),
        body=bytes(fields[b"body"]),
        redelivered=redelivered,
        handle=entry_id.decode(),
    )
