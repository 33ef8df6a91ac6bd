"""``GET /queue/status`` and ``tessera queue status``: what waits in the queue, who drains it,
how fast, and how many messages are dead letters."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tessera.model.common import utcnow
from tessera.storage.queue_ports import IngestQueue
from tessera.storage.worker_ports import DeadLetterStore, WorkerBeats
from tessera.workers.worker import BEAT_INTERVAL_S

# A worker that missed this many heartbeats is shown as gone.
LIVE_BEATS = 5


async def queue_status(
    *,
    mode: str,
    queue: IngestQueue | None,
    dead_letters: DeadLetterStore,
    beats: WorkerBeats,
    tenant: str,
) -> dict[str, Any]:
    since = utcnow() - timedelta(seconds=BEAT_INTERVAL_S * LIVE_BEATS)
    workers = await beats.live(tenant, since)
    answer: dict[str, Any] = {
        "mode": mode,
        "dead_letters": await dead_letters.count(tenant),
        "workers": [
            {
                "id": beat.worker_id,
                "host": beat.host,
                "pid": beat.pid,
                "started": beat.started.isoformat(),
                "seen": beat.seen.isoformat(),
                "messages": beat.messages,
                "events": beat.events,
                "retries": beat.retries,
                "dead_letters": beat.dead_letters,
                "messages_per_second": round(beat.rate, 1),
                "partitions": beat.partitions,
            }
            for beat in workers
        ],
        "messages_per_second": round(sum(beat.rate for beat in workers), 1),
    }
    if queue is None:
        answer["queue"] = None
        return answer
    status = await queue.status()
    answer["queue"] = {
        "backend": status.backend,
        "topic": status.topic,
        "backlog": status.backlog,
        "partitions": [
            {"partition": p.partition, "lag": p.backlog, "owner": p.owner}
            for p in sorted(status.partitions, key=lambda p: p.partition)
        ],
        "details": status.details,
    }
    return answer
