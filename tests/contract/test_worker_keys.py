"""The queue worker's scheduling on every queue backend: one key whose message keeps failing
holds back its own later messages only; every other key's messages are processed and
acknowledged meanwhile, and the stuck key's messages run in their order once it passes.

The pipeline here is a scripted stand-in for the ingest pipeline (what the worker runs each
message through), so the test can decide which message fails and when it recovers; the queue,
the dead-letter store and the heartbeat store are the real ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tessera.errors import StorageUnavailable
from tessera.model.common import DEFAULT_TENANT, utcnow
from tessera.model.source import EventSource
from tessera.pipeline.request import IncomingBatch, IncomingEvent, IngestResult
from tessera.queue.ports import QueueMessage
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.tables import metadata
from tessera.storage.sql.worker_records import SqlDeadLetterStore, SqlWorkerBeats
from tessera.workers.codec import encode_batch
from tessera.workers.worker import QueueWorker, WorkerOptions
from tests.support.queues import QUEUE_BACKENDS, QueueFactory

PARTITIONS = 2
OTHER_KEYS = 40
STUCK_MESSAGES = 3


@pytest.fixture(params=list(QUEUE_BACKENDS))
async def queues(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    async with QUEUE_BACKENDS[request.param](request.node.name, tmp_path, PARTITIONS) as factory:
        yield factory


class ScriptedPipeline:
    """Records what it processed; the "stuck" session's messages fail as storage being
    unavailable until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.done: list[str] = []
        self.failures = 0

    async def ingest(self, batch: IncomingBatch) -> IngestResult:
        assert batch.session_id is not None
        if batch.session_id == "stuck" and not self.release.is_set():
            self.failures += 1
            raise StorageUnavailable("this key's partition is unavailable")
        label = f"{batch.session_id}:{batch.events[0].properties['n']}"
        self.done.append(label)
        return IngestResult(None, batch.session_id, [])


def _message(session: str, number: int) -> QueueMessage:
    source = EventSource(id="web", tenant=DEFAULT_TENANT, name="Web", created=utcnow())
    batch = IncomingBatch(
        tenant=DEFAULT_TENANT,
        source=source,
        events=[IncomingEvent(type="page-view", properties={"n": number})],
        session_id=session,
    )
    return QueueMessage(session, encode_batch(batch))


async def _until(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_key_that_keeps_failing_holds_back_only_its_own_messages(
    queues: QueueFactory, tmp_path: Path
) -> None:
    engine = sqlite_engine(tmp_path / "config")
    (tmp_path / "config").mkdir(exist_ok=True)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    queue = queues.open()
    await queue.start()
    pipeline = ScriptedPipeline()
    worker = QueueWorker(
        queue=queue,
        ingestor=pipeline,
        dead_letters=SqlDeadLetterStore(engine),
        beats=SqlWorkerBeats(engine),
        topic="worker-keys",
        options=WorkerOptions(concurrency=8, fetch=20, backoff_s=0.05, wait_s=0.2),
    )
    try:
        messages = [_message("stuck", n) for n in range(STUCK_MESSAGES)]
        messages += [_message(f"other-{k}", 0) for k in range(OTHER_KEYS)]
        await queue.publish(messages)
        worker.start()

        others = {f"other-{k}:0" for k in range(OTHER_KEYS)}
        assert await _until(lambda: others <= set(pipeline.done), 30), pipeline.done
        # The other keys were acknowledged too: only the stuck key's messages are left.
        assert await _until(lambda: worker.counters.messages == OTHER_KEYS, 10)
        assert not any(label.startswith("stuck:") for label in pipeline.done)
        # It is retried meanwhile, never given up (storage being unavailable is no attempt).
        assert await _until(lambda: pipeline.failures >= 3, 10)
        assert worker.counters.dead_letters == 0

        pipeline.release.set()
        stuck = [f"stuck:{n}" for n in range(STUCK_MESSAGES)]
        assert await _until(lambda: set(stuck) <= set(pipeline.done), 30), pipeline.done
        assert [label for label in pipeline.done if label.startswith("stuck:")] == stuck
        assert await _until(lambda: worker.counters.messages == OTHER_KEYS + STUCK_MESSAGES, 10)
    finally:
        await worker.stop()
        status = await queue.status()
        await queue.close()
        await engine.dispose()
    assert status.backlog == 0
