"""A worker's reader on the embedded ingest log, and the thread its SQL runs on.

The consumer claims free or expired partition leases up to its fair share (partitions divided
by the consumers that beat within a lease), renews them every third of a lease, and gives idle
partitions beyond its share back so that a worker that just started gets work. Renewal runs
from ``fetch`` and ``ack`` and from a background task while the consumer lives: a worker busy
with a batch for longer than a lease (slow storage) keeps its partitions, rather than seeing
them taken over and the batch worked again by another worker, round after round. A worker that
crashed, or whose event loop hangs, loses its partitions a lease after the last renewal, and
whoever takes them over starts again from the committed position.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from tessera.queue.embedded import log as queue_log
from tessera.queue.lease_renewal import start_renewal
from tessera.queue.ports import Delivery, QueueUnavailable
from tessera.storage.sqlite.connection import open_connection

R = TypeVar("R")

# How often an idle fetch looks for new messages published by another process.
POLL_SECONDS = 0.025


class StateThread:
    """One thread and one connection for everything but publishing (leases, fetches, acks,
    status, trimming), so that SQLite never runs on the event loop. Acks and leases commit with
    ``synchronous=NORMAL``: losing the last of them to a power cut only means a redelivery."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-queue")
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    async def run(self, work: Callable[[sqlite3.Connection], R]) -> R:
        if self._closed:
            raise QueueUnavailable("the embedded queue is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, work)
        except sqlite3.Error as exc:
            raise QueueUnavailable(f"the embedded queue failed: {exc}") from exc

    def _call(self, work: Callable[[sqlite3.Connection], R]) -> R:
        if self._connection is None:
            self._connection = open_connection(self._path, synchronous="NORMAL", read_only=False)
        return work(self._connection)

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_connection)
        self._closed = True
        self._executor.shutdown(wait=False)

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass(slots=True)
class _Held:
    """A partition this consumer leases, under the generation it claimed."""

    generation: int
    # The last seq handed out in this generation: the next fetch reads after it.
    cursor: int
    committed: int
    # Seqs up to this one were handed out by an earlier owner: fetching them is a redelivery.
    delivered_before: int
    # Handed out and not acknowledged yet.
    in_flight: set[int] = field(default_factory=set)


class SqliteQueueConsumer:
    def __init__(
        self,
        state: StateThread,
        worker_id: str,
        *,
        partitions: int,
        lease_seconds: float,
        wait_for_publish: Callable[[float], Awaitable[None]],
        on_close: Callable[[SqliteQueueConsumer], None],
    ) -> None:
        self._state = state
        self._owner = worker_id
        self._partitions = partitions
        self._lease = lease_seconds
        self._wait_for_publish = wait_for_publish
        self._on_close = on_close
        self._held: dict[int, _Held] = {}
        self._renew_at = 0.0
        # Where the next fetch starts, so a busy partition does not starve the others.
        self._rotation = 0
        # The newest seq in the log when every held partition was last read to its end: while
        # it stays the newest, an idle poll has nothing to read.
        self._caught_up_at: int | None = None
        self._renewal: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def partitions(self) -> builtins.list[int]:
        """The partitions this consumer leased at its last call."""
        return sorted(self._held)

    async def fetch(self, max_messages: int, wait_seconds: float) -> builtins.list[Delivery]:
        if self._renewal is None and not self._closed:
            self._renewal = start_renewal(self, self._lease / 3, (QueueUnavailable,))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while not self._closed:
            batch = await self._state.run(partial(self._take, max_messages))
            remaining = deadline - loop.time()
            if batch or remaining <= 0:
                return batch
            await self._wait_for_publish(min(POLL_SECONDS, remaining))
        return []

    async def ack(self, deliveries: builtins.list[Delivery]) -> None:
        if deliveries and not self._closed:
            await self._state.run(partial(self._ack, deliveries))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._renewal is not None:
            self._renewal.cancel()
        self._on_close(self)
        await self._state.run(self._leave)

    @property
    def closed(self) -> bool:
        return self._closed

    async def keep_alive(self) -> None:
        """Renew the leases (and follow the fair share) if a third of a lease has passed."""
        if not self._closed and time.time() >= self._renew_at:
            await self._state.run(self._renew_if_due)

    # --- on the state thread ------------------------------------------------------------------

    def _take(self, max_messages: int, connection: sqlite3.Connection) -> builtins.list[Delivery]:
        self._keep_membership(connection, time.time())
        owned = sorted(self._held)
        if not owned or max_messages <= 0:
            return []
        # Read before the partitions, so whatever commits meanwhile is newer than it.
        newest = queue_log.newest_seq(connection)
        if newest == self._caught_up_at:
            return []
        start = self._rotation % len(owned)
        self._rotation += 1
        found: dict[int, list[tuple[int, str, bytes]]] = {}
        room = max_messages
        for partition in owned[start:] + owned[:start]:
            if room <= 0:
                break
            rows = queue_log.read_after(connection, partition, self._held[partition].cursor, room)
            if rows:
                found[partition] = rows
                room -= len(rows)
        self._caught_up_at = newest if room > 0 else None
        if not found:
            return []
        # Recorded before handing out, so a later owner can tell a redelivery.
        marks = [(rows[-1][0], p, self._held[p].generation) for p, rows in found.items()]
        lost = queue_log.update_held(connection, queue_log.MARK_DELIVERED, self._owner, marks)
        self._forget(lost)
        deliveries: list[Delivery] = []
        for partition in sorted(found.keys() - set(lost)):
            held = self._held[partition]
            for seq, key, body in found[partition]:
                redelivered = seq <= held.delivered_before
                deliveries.append(
                    Delivery(partition, seq, key, body, redelivered, handle=held.generation)
                )
                held.in_flight.add(seq)
            held.cursor = found[partition][-1][0]
        return deliveries

    def _renew_if_due(self, connection: sqlite3.Connection) -> None:
        now = time.time()
        if not self._closed and now >= self._renew_at:
            self._rebalance(connection, now)

    def _ack(self, deliveries: builtins.list[Delivery], connection: sqlite3.Connection) -> None:
        self._renew_if_due(connection)
        touched: set[int] = set()
        for delivery in deliveries:
            held = self._held.get(delivery.partition)
            # A delivery from a lease this consumer lost is ignored: the new owner has it.
            if held is None or held.generation != delivery.handle:
                continue
            if delivery.position in held.in_flight:
                held.in_flight.discard(delivery.position)
                touched.add(delivery.partition)
        advances: list[tuple[int, int, int]] = []
        for partition in sorted(touched):
            held = self._held[partition]
            # Everything up to just before the oldest unacknowledged delivery is done.
            position = min(held.in_flight) - 1 if held.in_flight else held.cursor
            if position > held.committed:
                held.committed = position
                advances.append((position, partition, held.generation))
        if advances:
            lost = queue_log.update_held(
                connection, queue_log.COMMIT_POSITION, self._owner, advances
            )
            self._forget(lost)

    def _keep_membership(self, connection: sqlite3.Connection, now: float) -> None:
        due = now >= self._renew_at
        if not due:
            # Cheap reads between renewals, so a rebalance follows a newcomer within a poll.
            share = queue_log.fair_share(connection, self._partitions, now, self._lease)
            if len(self._held) < share:
                due = queue_log.free_partitions(connection, now) > 0
            elif len(self._held) > share:
                due = any(not held.in_flight for held in self._held.values())
        if due:
            self._rebalance(connection, now)

    def _rebalance(self, connection: sqlite3.Connection, now: float) -> None:
        result = queue_log.rebalance(
            connection,
            self._owner,
            {p: held.generation for p, held in self._held.items()},
            {p for p, held in self._held.items() if held.in_flight},
            partitions=self._partitions,
            now=now,
            lease=self._lease,
        )
        self._forget(result.lost + result.released)
        if result.claimed:
            self._caught_up_at = None
        for claim in result.claimed:
            self._held[claim.partition] = _Held(
                generation=claim.generation,
                cursor=claim.committed,
                committed=claim.committed,
                delivered_before=claim.delivered,
            )
        self._renew_at = now + self._lease / 3

    def _forget(self, partitions: builtins.list[int]) -> None:
        for partition in partitions:
            self._held.pop(partition, None)

    def _leave(self, connection: sqlite3.Connection) -> None:
        queue_log.leave(connection, self._owner, {p: h.generation for p, h in self._held.items()})
        self._held.clear()
