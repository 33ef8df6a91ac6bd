"""Async answers name profiles that exist: every profile id an async `/track` answered is found
after the queue drained, and leads to the profile that got the request's events, on every
queue backend.

The load is sent while no worker runs, so every visitor's requests wait in the queue together,
as under a backlog: new visitors send three requests naming only their session (before the
fix the second and third were answered fresh ids that were never created), and visitors whose
session was first seen with a profile id of the client's own (from a server source, which may
name new profiles, and from a public one, which may not) send two more naming only the
session.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.async_cluster import AsyncCluster
from tests.support.queues import QueueFactory
from tests.support.sources import ServerSource, make_server_source

NEW_VISITORS = 60
CLIENT_NAMED = 15
REQUESTS_EACH = 3
DRAIN_DEADLINE_S = 180.0


async def _send(base_url: str, backend: ServerSource) -> dict[str, list[str]]:
    """Every visitor's requests (concurrently across visitors); the profile ids answered to
    each visitor's session. New visitors come through the public source; visitors whose first
    request names a profile id of the client's own come through the server source (which may
    name new profiles) and through the public one (which may not: it is answered the
    session's promised id instead)."""
    answered: dict[str, list[str]] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def track(body: dict[str, Any], source: ServerSource | None) -> str:
            headers = source.headers if source is not None else {}
            source_id = source.id if source is not None else "answers"
            answer = await client.post(
                "/track", json={"source": {"id": source_id}, **body}, headers=headers
            )
            assert answer.status_code == 200, answer.text
            return str(answer.json()["profile"]["id"])

        async def visitor(
            session: str, first_profile: str | None, source: ServerSource | None = None
        ) -> None:
            ids = answered.setdefault(session, [])
            for number in range(REQUESTS_EACH):
                body: dict[str, Any] = {
                    "session": {"id": session},
                    "events": [{"type": "page-view", "properties": {"n": number}}],
                }
                if number == 0 and first_profile is not None:
                    body["profile"] = {"id": first_profile}
                ids.append(await track(body, source))

        await asyncio.gather(
            *(visitor(f"new-{n}", None) for n in range(NEW_VISITORS)),
            *(visitor(f"named-{n}", f"client-profile-{n}", backend) for n in range(CLIENT_NAMED)),
            *(visitor(f"made-up-{n}", f"made-up-{n}") for n in range(CLIENT_NAMED)),
        )
    return answered


def test_every_profile_id_answered_exists_after_the_drain(
    queue_factory: QueueFactory, redis_prefix: str, tmp_path: Path
) -> None:
    env = {"TESSERA_REDIS_PREFIX": redis_prefix, **queue_factory.environment()}
    cluster = AsyncCluster(data_dir=tmp_path / "data", env=env, workers=0)
    cluster.start()
    try:
        admin = cluster.client()
        assert admin.post("/event-source", json={"id": "answers", "name": "Answers"}).is_success
        backend = make_server_source(admin, "Backend")
        answered = asyncio.run(_send(cluster.base_url, backend))
        cluster.start_worker(0)
        _wait_for_drain(admin, cluster)

        missing: list[str] = []
        split: list[str] = []
        for session, ids in answered.items():
            found = {}
            for profile_id in ids:
                answer = admin.get(f"/profile/{profile_id}")
                if answer.status_code != 200:
                    missing.append(profile_id)
                    continue
                found[profile_id] = answer.json()["id"]
            owner = admin.get(f"/session/{session}").json()["profile"]["id"]
            if set(found.values()) != {owner}:
                split.append(session)
                continue
            profile = admin.get(f"/profile/{owner}").json()
            stored = admin.get(f"/profile/{owner}/events", params={"limit": 1}).json()["total"]
            assert profile["stats"]["events"] == stored == REQUESTS_EACH, (session, profile)
        answers = sum(len(ids) for ids in answered.values())
        print(
            f"\n[{queue_factory.backend}] {answers} answers for {len(answered)} visitors: "
            f"{len(missing)} answered ids missing, {len(split)} visitors split"
        )
        assert not missing
        assert not split
        # A server source's own ids are kept: those visitors' profiles carry them. A public
        # client's made-up ids are not taken (docs/security.md): no profile has them.
        for number in range(CLIENT_NAMED):
            assert admin.get(f"/profile/client-profile-{number}").json()["id"] == (
                f"client-profile-{number}"
            )
            assert admin.get(f"/profile/made-up-{number}").status_code == 404
    finally:
        cluster.stop()


def _wait_for_drain(client: httpx.Client, cluster: AsyncCluster) -> None:
    deadline = time.monotonic() + DRAIN_DEADLINE_S
    while time.monotonic() < deadline:
        status = client.get("/queue/status").json()
        if status["queue"]["backlog"] == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"the queue did not drain\n{cluster.logs()}")
