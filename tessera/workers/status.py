"""``GET /queue/status`` and ``tessera queue status``: what waits in the queue, who drains it,
how fast, how many messages are dead letters, and the backlog against its limit with the
publishes refused for it (``backpressure``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tessera.model.common import utcnow
from tessera.queue.ports import BacklogState, IngestQueue
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
        "backpressure": _backpressure(status.backpressure),
    }
    return answer


def _backpressure(state: BacklogState | None) -> dict[str, Any] | None:
    """The unprocessed backlog against TESSERA_QUEUE_MAX_BACKLOG_MB as this process's
    publisher sees it, and the publishes it refused (503) since it started."""
    if state is None:
        return None
    return {
        "accepting": state.accepting,
        "backlog_bytes": state.estimated_bytes,
        "limit_bytes": state.limit_bytes,
        "used": round(state.estimated_bytes / state.limit_bytes, 4),
        "backlog_messages": state.messages,
        "refusals": state.refusals,
        "measured_seconds_ago": (
            None if state.measured_seconds_ago is None else round(state.measured_seconds_ago, 1)
        ),
        "drain_bytes_per_second": (
            None if state.drain_bytes_per_second is None else round(state.drain_bytes_per_second)
        ),
    }
