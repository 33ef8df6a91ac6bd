"""How many records per second the Elasticsearch writer stores, per refresh policy.

    python benchmarks/elastic_writer.py [--url http://127.0.0.1:9200] [--seconds 10]
        [--refresh true|wait_for] [--unversioned]

Callers commit what one /track request commits (one event, its session, its profile), as many
at a time as `--callers`, for `--seconds`; half of them are returning visitors (their session
and profile are updated), half new ones. Each holds its session's and profile's locks while it
commits, as the server does, and the records carry the locks' fencing tokens as versions
(`--unversioned`: without, as before fencing). Every commit returns only once its records are
searchable. Each run gets its own throwaway index prefix, deleted at the end.
Not a test: the numbers depend on the machine and the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch

from tessera.core.locks import KeyedLocks
from tessera.model.common import Ref
from tessera.model.event import Event, EventMetadata
from tessera.model.profile import Profile, ProfileMetadata, ProfileTime
from tessera.model.session import Session, SessionMetadata, SessionTime
from tessera.storage.elastic.backend import ElasticRecordBackend
from tessera.storage.elastic.client import ElasticConnection
from tessera.storage.elastic.naming import KINDS
from tessera.storage.elastic.schema import IndexShape
from tessera.storage.ports import ChangeSet

TENANT = "bench"
RETURNING = 2000


def track(number: int, now: datetime) -> ChangeSet:
    visitor = number % RETURNING if number % 2 else RETURNING + number
    profile_id, session_id = f"p-{visitor}", f"s-{visitor}"
    event = Event(
        id=f"e-{number}",
        tenant=TENANT,
        type="page-view",
        time=now,
        metadata=EventMetadata(insert=now),
        source=Ref("web"),
        session=Ref(session_id),
        profile=Ref(profile_id),
        properties={"url": f"https://example.com/{number % 97}", "n": number, "ok": True},
        context={"page": {"title": "Products", "referrer": "https://example.org/"}},
    )
    session = Session(
        id=session_id,
        tenant=TENANT,
        profile=Ref(profile_id),
        metadata=SessionMetadata(time=SessionTime(insert=now, update=now), channel="web"),
        source=Ref("web"),
        events=number,
        device={"os": "Linux", "browser": "Firefox"},
    )
    profile = Profile(
        id=profile_id,
        tenant=TENANT,
        metadata=ProfileMetadata(time=ProfileTime(insert=now, update=now)),
        ids=[profile_id],
        stats={"visits": 1, "events": number},
        traits={"plan": "pro" if visitor % 3 else "free", "score": visitor * 1.5},
    )
    return ChangeSet(events=[event], sessions=[session], profiles=[profile])


async def measure(
    url: str, refresh: Any, seconds: float, callers: int, *, versioned: bool = True
) -> dict[str, float]:
    backend = ElasticRecordBackend(
        ElasticConnection(hosts=(url,)),
        prefix=f"bench-{refresh.replace('_', '')}-{os.getpid()}",
        shapes=dict.fromkeys(KINDS, IndexShape(1, 0)),
        partitioning={"event": "month", "session": "quarter", "profile": "year"},
        batch_size=500,
        flush_interval_s=0.002,
        refresh=refresh,
    )
    await backend.start()
    counter = itertools.count()
    locks = KeyedLocks()
    latencies: list[float] = []

    async def commit(changes: ChangeSet) -> None:
        """Under the records' locks, with their tokens as versions (as VisitorDirectory)."""
        keys = [f"s-{s.id}" for s in changes.sessions] + [f"p-{p.id}" for p in changes.profiles]
        async with locks.hold_all(keys) as held:
            if versioned:
                for session in changes.sessions:
                    fence = held.fence(f"s-{session.id}")
                    assert fence is not None
                    changes.versions["session", TENANT, session.id] = fence
                for profile in changes.profiles:
                    fence = held.fence(f"p-{profile.id}")
                    assert fence is not None
                    changes.versions["profile", TENANT, profile.id] = fence
            await backend.writer.commit(changes)

    now = datetime.now(UTC) - timedelta(minutes=1)
    try:
        await commit(track(next(counter), now))
        deadline = time.monotonic() + seconds
        commits_before = backend.writer.commits

        async def caller() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                await commit(track(next(counter), now))
                latencies.append(time.perf_counter() - started)

        began = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.monotonic() - began
        batches = backend.writer.commits - commits_before
    finally:
        await backend.close()
        drop(url, backend.names.prefix)
    latencies.sort()
    return {
        "change sets/s": len(latencies) / elapsed,
        "records/s": 3 * len(latencies) / elapsed,
        "bulk requests/s": batches / elapsed,
        "records per bulk": 3 * len(latencies) / max(batches, 1),
        "p50 ms": 1000 * latencies[len(latencies) // 2],
        "p99 ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def drop(url: str, prefix: str) -> None:
    client = Elasticsearch(url)
    try:
        names = sorted(client.indices.get(index=f"{prefix}.*", allow_no_indices=True).body)
        if names:
            client.indices.delete(index=",".join(names))
        templates = client.options(ignore_status=404).indices.get_index_template(name=f"{prefix}.*")
        for item in templates.body.get("index_templates") or []:
            client.indices.delete_index_template(name=item["name"])
        for item in client.cluster.get_component_template().body["component_templates"]:
            if item["name"].startswith(prefix + "."):
                client.cluster.delete_component_template(name=item["name"])
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:9200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--refresh", choices=["true", "wait_for", "false"], action="append")
    parser.add_argument("--unversioned", action="store_true")
    options = parser.parse_args()
    for refresh in options.refresh or ["true", "wait_for"]:
        result = asyncio.run(
            measure(
                options.url,
                refresh,
                options.seconds,
                options.callers,
                versioned=not options.unversioned,
            )
        )
        shown = ", ".join(f"{key} {value:,.1f}" for key, value in result.items())
        print(f"refresh={refresh}: {shown}")


if __name__ == "__main__":
    main()
