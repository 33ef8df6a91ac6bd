"""The embedded queue backend for the contract suite and the crash tests: a log file in the
test's own folder, named as a Tessera process names it (``<TESSERA_DATA_DIR>/queue.db``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tessera.queue.embedded.queue import SqliteIngestQueue
from tessera.queue.ports import IngestQueue

LOG_FILE = "queue.db"


class EmbeddedQueueFactory:
    backend = "embedded"

    def __init__(self, folder: Path, topic: str, partitions: int) -> None:
        self.folder = folder
        self.topic = topic
        self.partitions = partitions

    @property
    def path(self) -> Path:
        return self.folder / LOG_FILE

    def open(self, *, max_backlog_mb: int = 1024) -> IngestQueue:
        return SqliteIngestQueue(
            self.path,
            topic=self.topic,
            partitions=self.partitions,
            max_backlog_mb=max_backlog_mb,
        )

    def unreachable(self) -> IngestQueue | None:
        return None

    def environment(self) -> dict[str, str]:
        # The crash test points TESSERA_DATA_DIR at ``folder``, where the log already is.
        return {
            "TESSERA_QUEUE": "embedded",
            "TESSERA_QUEUE_TOPIC": self.topic,
            "TESSERA_QUEUE_PARTITIONS": str(self.partitions),
        }


@asynccontextmanager
async def embedded_queue(
    name: str, folder: Path, partitions: int
) -> AsyncIterator[EmbeddedQueueFactory]:
    # The folder is the test's own, so the file needs no cleaning up beyond pytest's.
    topic = "tessera-ingest-" + re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:80].strip("-")
    yield EmbeddedQueueFactory(folder, topic, partitions)
