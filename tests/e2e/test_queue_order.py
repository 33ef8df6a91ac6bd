"""One profile's events are processed in the order they were acknowledged, with four worker
processes draining the queue at once, on every queue backend.

Twenty clients each send 25 requests for their own profile, one after the other (the next
only once the previous was acknowledged), all twenty at the same time. A mapping rule appends
each event's sequence number to the profile, so the profile's list is the order the workers
applied them in, and the events table's arrival order shows the order they were stored in.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from tests.support.async_cluster import AsyncCluster
from tests.support.queues import QueueFactory
from tests.support.sources import ServerSource, make_server_source

PROFILES = 20
STEPS = 25
WORKERS = 4
DRAIN_DEADLINE_S = 180.0


async def _send_in_order(base_url: str, source: ServerSource) -> None:
    source_id = source.id
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=source.headers) as client:

        async def one_profile(number: int) -> None:
            for step in range(STEPS):
                answer = await client.post(
                    "/track",
                    json={
                        "source": {"id": source_id},
                        "profile": {"id": f"order-{number}"},
                        "session": {"id": f"order-session-{number}"},
                        "events": [
                            {
                                "id": f"order-{number}-{step}",
                                "type": "step",
                                "properties": {"n": step},
                            }
                        ],
                    },
                )
                assert answer.status_code == 200, answer.text

        await asyncio.gather(*(one_profile(number) for number in range(PROFILES)))


def _stored_order(data_dir: Path) -> dict[str, list[int]]:
    connection = sqlite3.connect(f"file:{data_dir / 'events.sqlite'}?mode=ro", uri=True)
    try:
        order: dict[str, list[int]] = defaultdict(list)
        rows = connection.execute(
            "SELECT profile_id, id FROM events WHERE type = 'step' ORDER BY rowid"
        )
        for profile_id, event_id in rows:
            order[profile_id].append(int(event_id.rsplit("-", 1)[1]))
        return order
    finally:
        connection.close()


def test_each_profile_is_processed_in_order_by_four_workers(
    queue_factory: QueueFactory,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    env = {"TESSERA_REDIS_PREFIX": redis_prefix, **queue_factory.environment()}
    cluster = AsyncCluster(data_dir=tmp_path / "data", env=env, workers=WORKERS)
    cluster.start()
    try:
        admin = cluster.client()
        # The operator's own system names the profiles and events (a server source).
        source = make_server_source(admin, "Order", id="order-web")
        rule = {
            "name": "steps in order",
            "event_type": "step",
            "mappings": [{"event": "properties.n", "op": "append", "profile": "traits.steps"}],
        }
        assert admin.post("/event-mapping", json=rule).is_success
        _wait_for_workers(admin, cluster)
        asyncio.run(_send_in_order(cluster.base_url, source))
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        while time.monotonic() < deadline:
            status = admin.get("/queue/status").json()
            stored = sum(len(v) for v in _stored_order(cluster.data_dir).values())
            if status["queue"]["backlog"] == 0 and stored == PROFILES * STEPS:
                break
            time.sleep(0.5)
        stored_order = _stored_order(cluster.data_dir)
        profiles = {n: admin.get(f"/profile/order-{n}").json() for n in range(PROFILES)}
        applied = {n: profile["traits"].get("steps") for n, profile in profiles.items()}
        status = _counted_beats(admin, PROFILES * STEPS)
        busy = [w for w in status["workers"] if w["messages"] > 0]
        print(
            f"\n[{queue_factory.backend}] {PROFILES} profiles x {STEPS} steps; "
            f"{len(status['workers'])} workers, {len(busy)} of them processed messages "
            f"({[w['messages'] for w in status['workers']]})"
        )
        assert len(status["workers"]) == WORKERS
        assert len(busy) >= 2, "the partitions were not shared among the workers"
        for n in range(PROFILES):
            assert stored_order[f"order-{n}"] == list(range(STEPS)), n
            assert applied[n] == list(range(STEPS)), n
    finally:
        cluster.stop()


def _counted_beats(client: httpx.Client, messages: int) -> dict[str, Any]:
    """The queue status once the workers' heartbeats (every 2 s) count every message."""
    deadline = time.monotonic() + 15
    while True:
        status: dict[str, Any] = client.get("/queue/status").json()
        counted = sum(int(w["messages"]) for w in status["workers"])
        if counted >= messages or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def _wait_for_workers(client: httpx.Client, cluster: AsyncCluster) -> None:
    """All four consumers are in before the load: partitions are not moving meanwhile."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.get("/queue/status").json()
        owners = {p["owner"] for p in status["queue"]["partitions"] if p["owner"]}
        if len(status["workers"]) == WORKERS and (len(owners) >= 2 or not _owners_known(status)):
            time.sleep(2.0)  # a last rebalance may still be in flight on brokers
            return
        time.sleep(0.3)
    raise AssertionError(f"the workers did not all start: {status}\n{cluster.logs()}")


def _owners_known(status: dict[str, object]) -> bool:
    queue = status["queue"]
    assert isinstance(queue, dict)
    return any(p["owner"] for p in queue["partitions"])
