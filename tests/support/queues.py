"""Queue backends for the IngestQueue contract suite and the crash tests.

An opener takes the test's name, a fresh folder and a partition count, and yields a
``QueueFactory`` on a topic (stream, log file) only that test uses; it removes what it created
when the test ends. Each backend's opener lives in its own ``queues_<backend>.py`` module and is
registered in ``QUEUE_BACKENDS`` below. A backend whose server is not running skips its tests
with one loud line naming the server and how to start it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from tessera.queue.ports import IngestQueue


class QueueFactory(Protocol):
    backend: str

    def open(self, *, max_backlog_mb: int = 1024) -> IngestQueue:
        """A new queue object on the test's topic, with its own connections, refusing
        publishes past ``max_backlog_mb`` of unprocessed messages."""
        ...

    def unreachable(self) -> IngestQueue | None:
        """A queue object pointing at a port where nothing listens (None: cannot be)."""
        ...

    def environment(self) -> dict[str, str]:
        """Settings (environment variables) that make a Tessera process use this topic."""
        ...


QueueOpener = Callable[[str, Path, int], AbstractAsyncContextManager[QueueFactory]]


async def risks_settled(queue: IngestQueue, expected: int) -> list[str]:
    """``retention_risks`` once it names ``expected`` risks (or after ten seconds): a broker's
    config or policy change reaches its metadata a moment after it was made."""
    for _ in range(40):
        risks = await queue.retention_risks()
        if len(risks) == expected:
            break
        await asyncio.sleep(0.25)
    return risks


QUEUE_BACKENDS: dict[str, QueueOpener] = {}
# Backends register here, one line each (keeps the registry's edits independent).
from tests.support.queues_kafka import kafka_queue  # noqa: E402

QUEUE_BACKENDS["kafka"] = kafka_queue
from tests.support.queues_embedded import embedded_queue  # noqa: E402

QUEUE_BACKENDS["embedded"] = embedded_queue
from tests.support.queues_pulsar import pulsar_queue  # noqa: E402

QUEUE_BACKENDS["pulsar"] = pulsar_queue
from tests.support.queues_redis import redis_queue  # noqa: E402

QUEUE_BACKENDS["redis"] = redis_queue
