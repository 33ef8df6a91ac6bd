"""Back-pressure through the HTTP intake, black box, on every queue backend: `tessera serve` in
async mode with no worker running and a 1 MB backlog limit (TESSERA_QUEUE_MAX_BACKLOG_MB).

/track answers 200 until the unprocessed backlog nears the limit, then 503 with Retry-After
(never a 500, never a 200 for an event the queue did not keep); GET /queue/status shows the
backlog against its limit and the refusals. Once a `tessera worker` drains the queue, every
acknowledged event is stored and /track answers 200 again.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.support.async_cluster import AsyncCluster
from tests.support.queues import QueueFactory

# Each request carries ~4 KB, so about 250 fit under the 1 MB limit.
PADDING = "p" * 4000
MAX_REQUESTS = 1000


def _track(client: httpx.Client, profile_id: str) -> httpx.Response:
    return client.post(
        "/track",
        json={
            "source": {"id": "web"},
            "profile": {"id": profile_id},
            "events": [{"type": "page-view", "properties": {"padding": PADDING}}],
        },
    )


def _eventually(check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def test_a_full_queue_answers_503_until_a_worker_drains_it(
    queue_factory: QueueFactory, redis_prefix: str, tmp_path: Path
) -> None:
    env = {
        "TESSERA_REDIS_PREFIX": redis_prefix,
        **queue_factory.environment(),
        "TESSERA_QUEUE_MAX_BACKLOG_MB": "1",
    }
    cluster = AsyncCluster(data_dir=tmp_path / "data", env=env, workers=0)
    run = uuid.uuid4().hex[:8]
    try:
        cluster.start_api()
        admin = cluster.client()
        assert admin.post("/event-source", json={"id": "web", "name": "Web"}).is_success
        acknowledged: list[str] = []
        refused: httpx.Response | None = None
        for n in range(MAX_REQUESTS):
            answer = _track(admin, f"bp-{run}-{n}")
            if answer.status_code == 503:
                refused = answer
                break
            assert answer.status_code == 200, answer.text
            acknowledged.append(answer.json()["profile"]["id"])
        assert refused is not None, f"no 503 after {MAX_REQUESTS} requests past a 1 MB limit"
        assert int(refused.headers["Retry-After"]) >= 1
        # What a public answer may say; which limit was reached is in the log.
        assert refused.json()["detail"] == "the ingest queue is full; retry later"
        assert "TESSERA_QUEUE_MAX_BACKLOG_MB" in cluster.logs(tail=10**8)
        # Not refused long before the limit: ~4 KB a request, 1 MB.
        assert len(acknowledged) >= 120, len(acknowledged)

        status = admin.get("/queue/status").json()["queue"]
        pressure = status["backpressure"]
        assert pressure["refusals"] >= 1 and pressure["accepting"] is False, pressure
        assert pressure["limit_bytes"] == 2**20

        cluster.start_worker(0)

        # Partitions drain side by side: wait for every acknowledged profile, not the last.
        missing = list(acknowledged)

        def all_stored() -> bool:
            missing[:] = [p for p in missing if admin.get(f"/profile/{p}").status_code != 200]
            return not missing

        assert _eventually(all_stored, 90), f"{len(missing)} acknowledged events not stored"

        def accepted() -> bool:
            return _track(admin, f"bp-{run}-after").status_code == 200

        assert _eventually(accepted, 30), "still 503 after the worker drained the queue"
        cluster.check_alive()
    finally:
        cluster.stop()
