"""What queue workers keep beside the queue: dead letters (messages the pipeline could not
process, with the error, until an operator replays or drops them) and worker heartbeats (who
is draining the queue, how fast). Both live in the configuration database, so every API
process can show them and replay a dead letter whatever the queue backend is."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Protocol

import msgspec


class DeadLetter(msgspec.Struct, kw_only=True):
    id: str
    tenant: str
    # Where it came from: the queue topic, its partition and key, and its place there.
    topic: str
    partition: int
    key: str
    position: int
    body: bytes
    error: str
    attempts: int
    created: datetime


class WorkerBeat(msgspec.Struct, kw_only=True):
    """One worker's last report. Counters are totals since the worker started."""

    worker_id: str
    tenant: str
    host: str
    pid: int
    started: datetime
    seen: datetime
    messages: int = 0
    events: int = 0
    retries: int = 0
    dead_letters: int = 0
    # Messages per second over the last reporting interval.
    rate: float = 0.0
    partitions: builtins.list[int] = msgspec.field(default_factory=list)


class DeadLetterStore(Protocol):
    async def add(self, letter: DeadLetter) -> None: ...

    async def get(self, tenant: str, letter_id: str) -> DeadLetter | None: ...

    async def list(
        self, tenant: str, *, limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[DeadLetter], int]:
        """Newest first, and the total for the tenant."""
        ...

    async def delete(self, tenant: str, letter_id: str) -> bool: ...

    async def count(self, tenant: str) -> int: ...


class WorkerBeats(Protocol):
    async def beat(self, beat: WorkerBeat) -> None:
        """Insert or replace the worker's row."""
        ...

    async def live(self, tenant: str, since: datetime) -> builtins.list[WorkerBeat]:
        """Workers seen at or after ``since``, by worker id."""
        ...

    async def forget(self, tenant: str, worker_id: str) -> None: ...

    async def purge(self, before: datetime) -> int:
        """Rows of workers last seen before ``before`` (stopped or crashed long ago)."""
        ...
