"""Queue retention as ``tessera install`` applies it: the time and size limits of *processed*
messages from the settings, set on the broker (Pulsar namespace) or used to trim the embedded
log, the Redis streams and the Kafka topic; and the broker made to keep every unprocessed
message (Kafka topic retention unlimited, Pulsar without TTL and with a refusing backlog
quota)."""

from __future__ import annotations

import asyncio
import logging

from tessera.core.background import BackgroundLoop
from tessera.settings import Settings
from tessera.storage.extras import PULSAR, require
from tessera.workers.connection import ConnectedQueue
from tessera.workers.queue_factory import build_queue, retention_of

log = logging.getLogger(__name__)


def uses_a_queue(settings: Settings) -> bool:
    """Async mode, or a queue named in the settings (so install prepares it ahead)."""
    return (
        settings.ingest_mode == "async"
        or settings.queue_backend != "auto"
        or bool(settings.pulsar_host or settings.kafka_bootstrap_servers)
    )


async def apply_queue_retention(settings: Settings) -> list[str]:
    """Creates the topic when missing and sets its retention; lines saying what was done."""
    if not uses_a_queue(settings):
        return []
    if settings.queue_kind == "pulsar":
        require(PULSAR)
        from tessera.queue.pulsar.queue import refuse_shared_namespace

        # Before start(), which would create the topic there.
        refuse_shared_namespace(settings.pulsar_namespace)
    queue = build_queue(settings)
    try:
        await queue.start()
        return await queue.apply_retention(retention_of(settings))
    finally:
        await queue.close()


# The embedded log, the Redis streams and the Kafka topic keep processed messages until trimmed
# (the Kafka broker's own retention is off: it would delete unprocessed ones too); Pulsar
# applies its namespace retention, which only ever counts acknowledged messages.
TRIM_INTERVAL_S = 300.0


class QueueTrimmer:
    """Trims the queue every few minutes in each process that runs queue workers (trimming
    twice at once is harmless: only acknowledged messages past the limits go)."""

    def __init__(self, queue: ConnectedQueue, interval_s: float = TRIM_INTERVAL_S) -> None:
        self._queue = queue
        self._interval_s = interval_s
        self.loop = BackgroundLoop("queue-trimmer", self._forever)

    async def _forever(self) -> None:
        trim = getattr(self._queue.inner, "trim", None)
        if trim is None:
            return
        while True:
            await asyncio.sleep(self._interval_s)
            if not self._queue.connected():
                continue
            try:
                removed = await trim()
            except Exception:
                log.warning("trimming the ingest queue failed", exc_info=True)
                continue
            if removed:
                log.info("ingest queue: %d acknowledged messages trimmed", removed)
