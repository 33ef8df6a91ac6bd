"""Zero loss, nothing twice: async intake under SIGKILL, once per queue backend.

An API process and two worker processes share one data folder, one Redis (locks, caches) and
one queue topic. A client sends 20,000 events (2,000 requests of 10, 400 profiles, 40 pairs of
profiles that a shared e-mail merges) and retries every request that was not answered 200 with
the same body (the same event ids), as a tracker does. Meanwhile the API and the workers are
killed with SIGKILL at random moments (at least three times each) and started again.
Afterwards every acknowledged event is stored exactly once, every profile's event counter
equals what was sent to it (merged pairs: the sum of both) and the number of events stored
under its ids, the merged pairs are one profile, and there is no dead letter. The records are
in SQLite for every queue backend, and once more in Elasticsearch (with the embedded queue).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from elasticsearch import Elasticsearch

from tests.support.async_cluster import AsyncCluster
from tests.support.elastic import URL as ELASTIC_URL
from tests.support.elastic import claim_prefix, drop_created_prefixes, require_elastic
from tests.support.queues import QueueFactory
from tests.support.sources import ServerSource, make_server_source

REQUESTS = 2_000
EVENTS_PER_REQUEST = 10
PROFILES = 400
MERGED_PAIRS = 40
CLIENTS = 24
LOAD_DEADLINE_S = 420.0
# The load is spread over at least this long, so that on a fast machine too the processes are
# killed many times while it runs (a kill every 1.5 to 4 s) rather than once or twice.
LOAD_SPREAD_S = 40.0
MIN_KILLS_EACH = 3
KILLS_DEADLINE_S = 120.0
DRAIN_DEADLINE_S = 300.0
PARTITIONS = 8


class Load:
    """The requests, what was sent to each profile, and which were acknowledged."""

    def __init__(self, source: ServerSource, seed: int) -> None:
        rng = random.Random(seed)
        # The operator's own system: it names the profiles and events, as a server source may.
        self.source = source
        source_id = source.id
        self.sent_to: Counter[str] = Counter()
        self.pairs = [(f"p{2 * n}", f"p{2 * n + 1}") for n in range(MERGED_PAIRS)]
        merge_requests = {}
        numbers = rng.sample(range(REQUESTS), 2 * MERGED_PAIRS)
        for number, (first, second) in enumerate(self.pairs):
            email = f"pair-{number}@crash.example"
            merge_requests[numbers[2 * number]] = (first, email)
            merge_requests[numbers[2 * number + 1]] = (second, email)
        self.bodies: list[dict[str, Any]] = []
        for number in range(REQUESTS):
            profile = f"p{rng.randrange(PROFILES)}"
            identify = merge_requests.get(number)
            if identify is not None:
                profile = identify[0]
            events: list[dict[str, Any]] = [
                {"id": f"r{number}-e{n}", "type": "page-view", "properties": {"n": n}}
                for n in range(EVENTS_PER_REQUEST)
            ]
            if identify is not None:
                events[-1] = {
                    "id": f"r{number}-e{EVENTS_PER_REQUEST - 1}",
                    "type": "identify",
                    "properties": {"email": identify[1]},
                }
            self.sent_to[profile] += len(events)
            self.bodies.append(
                {
                    "source": {"id": source_id},
                    "profile": {"id": profile},
                    "session": {"id": f"s-{profile}"},
                    "events": events,
                }
            )
        self.acknowledged: set[int] = set()
        self.retries = 0
        self.refusals: Counter[str] = Counter()

    def event_ids(self) -> set[str]:
        return {e["id"] for n in self.acknowledged for e in self.bodies[n]["events"]}

    async def send_all(self, base_url: str) -> None:
        pending: asyncio.Queue[int] = asyncio.Queue()
        for number in range(REQUESTS):
            pending.put_nowait(number)
        start = time.monotonic()
        deadline = start + LOAD_DEADLINE_S
        async with httpx.AsyncClient(
            base_url=base_url, timeout=10, headers=self.source.headers
        ) as client:

            async def sender() -> None:
                while not pending.empty() and time.monotonic() < deadline:
                    number = pending.get_nowait()
                    not_before = start + number * LOAD_SPREAD_S / REQUESTS
                    await asyncio.sleep(max(0.0, not_before - time.monotonic()))
                    if await self._send(client, number):
                        self.acknowledged.add(number)
                    else:
                        self.retries += 1
                        pending.put_nowait(number)
                        await asyncio.sleep(0.2)

            await asyncio.gather(*(sender() for _ in range(CLIENTS)))

    async def _send(self, client: httpx.AsyncClient, number: int) -> bool:
        try:
            answer = await client.post("/track", json=self.bodies[number])
        except httpx.TransportError as error:
            self.refusals[type(error).__name__] += 1
            return False
        if answer.status_code == 200:
            body = answer.json()
            assert body["profile"] and body["session"], body
            assert len(body["events"]) == EVENTS_PER_REQUEST
            return True
        # Only "come back later" is acceptable while processes die; a 4xx would be a bug.
        assert answer.status_code == 503, answer.text
        assert answer.headers.get("retry-after"), answer.headers
        self.refusals["503"] += 1
        return False


def _killer(cluster: AsyncCluster, stop: threading.Event, seed: int) -> None:
    """SIGKILL a random process every 1.5 to 4 s and start it again shortly after."""
    rng = random.Random(seed)
    while not stop.wait(rng.uniform(1.5, 4.0)):
        victim = rng.randrange(1 + cluster.workers)
        if victim == 0:
            cluster.kill_api()
            time.sleep(rng.uniform(0.1, 1.0))
            cluster.start_api()
        else:
            cluster.kill_worker(victim - 1)
            time.sleep(rng.uniform(0.1, 1.0))
            cluster.start_worker(victim - 1)


class StoredEvents(Protocol):
    """How the test reads back what the record store holds."""

    def count(self) -> int: ...

    def ids(self) -> Counter[str]: ...


class SqliteEvents:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "events.sqlite"

    def _query(self, sql: str) -> list[Any]:
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM events")[0][0])

    def ids(self) -> Counter[str]:
        return Counter(row[0] for row in self._query("SELECT id FROM events"))


class ElasticEvents:
    """Reads the events alias; refreshed first, so what was indexed is what is counted."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.client = Elasticsearch(ELASTIC_URL, request_timeout=60)

    def _refresh(self) -> bool:
        if not self.client.indices.exists_alias(name=self.alias):
            return False
        self.client.indices.refresh(index=self.alias)
        return True

    def count(self) -> int:
        if not self._refresh():
            return 0
        return int(self.client.count(index=self.alias)["count"])

    def ids(self) -> Counter[str]:
        found: Counter[str] = Counter()
        if not self._refresh():
            return found
        after: list[Any] | None = None
        while True:
            page = self.client.search(
                index=self.alias,
                size=1000,
                source={"includes": ["id"]},
                # A repeated id can only be in another index (partition): ties sort by index.
                sort=[{"id": "asc"}, {"_index": "asc"}],
                search_after=after,
            )
            hits = page["hits"]["hits"]
            if not hits:
                return found
            found.update(hit["_source"]["id"] for hit in hits)
            after = hits[-1]["sort"]

    def close(self) -> None:
        self.client.close()


def _wait_for_drain(
    client: httpx.Client, cluster: AsyncCluster, stored: StoredEvents, expected: int
) -> dict[str, Any]:
    deadline = time.monotonic() + DRAIN_DEADLINE_S
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = client.get("/queue/status").json()
        if status["queue"]["backlog"] == 0 and stored.count() >= expected:
            return status
        time.sleep(0.5)
    raise AssertionError(f"the queue did not drain: {status}\n{cluster.logs()}")


def test_no_acknowledged_event_is_lost_or_stored_twice_when_processes_die(
    queue_factory: QueueFactory, tmp_path: Path, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    data_dir = tmp_path / "data"
    env = {"TESSERA_REDIS_PREFIX": redis_prefix, **queue_factory.environment()}
    _crash_run(queue_factory.backend, env, data_dir, SqliteEvents(data_dir), request)


def test_with_elasticsearch_records_nothing_is_lost_or_counted_twice_when_processes_die(
    tmp_path: Path, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    """The same crash test with the records on Elasticsearch (embedded queue)."""
    require_elastic()
    prefix = claim_prefix(tmp_path)
    env = {
        "TESSERA_REDIS_PREFIX": redis_prefix,
        "ELASTIC_HOST": ELASTIC_URL,
        "ELASTIC_INDEX_SHARDS": "1",
        "ELASTIC_INDEX_REPLICAS": "0",
        "TESSERA_ELASTIC_INDEX_PREFIX": prefix,
        "TESSERA_QUEUE": "embedded",
        "TESSERA_QUEUE_PARTITIONS": str(PARTITIONS),
    }
    stored = ElasticEvents(f"{prefix}.default.event")
    try:
        _crash_run("elasticsearch", env, tmp_path / "data", stored, request)
    finally:
        stored.close()
        drop_created_prefixes()


def _crash_run(
    name: str,
    env: dict[str, str],
    data_dir: Path,
    stored: StoredEvents,
    request: Any,
) -> None:
    env = {"TESSERA_QUEUE_LEASE_SECONDS": "2", "TESSERA_WORKER_CONCURRENCY": "32", **env}
    cluster = AsyncCluster(data_dir=data_dir, env=env, workers=2)
    cluster.start()
    try:
        admin = cluster.client()
        source = make_server_source(admin, "Crash test", id="crash-web")
        load = Load(source, zlib.crc32(request.node.name.encode()))

        stop = threading.Event()
        killer = threading.Thread(target=_killer, args=(cluster, stop, 7), daemon=True)
        killer.start()
        try:
            asyncio.run(load.send_all(cluster.base_url))
            # On a slow machine restarts take longer: the killing goes on into the drain until
            # each kind of process has died often enough.
            deadline = time.monotonic() + KILLS_DEADLINE_S
            while min(cluster.kills.values()) < MIN_KILLS_EACH and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop.set()
            killer.join(timeout=60)
        assert len(load.acknowledged) == REQUESTS, "the load did not finish in time"
        cluster.check_alive()
        admin = cluster.client()  # the API may have been restarted: a new connection
        expected_ids = load.event_ids()
        status = _wait_for_drain(admin, cluster, stored, len(expected_ids))

        found = stored.ids()
        twice = [event_id for event_id, times in found.items() if times > 1]
        missing = expected_ids - set(found)
        unexpected = set(found) - expected_ids
        counters_ok, groups = _check_profiles(admin, load)
        print(
            f"\n[{name}] sent {len(expected_ids)} events in {REQUESTS} requests "
            f"(all acknowledged after {load.retries} retries; refusals {dict(load.refusals)}); "
            f"kills: {cluster.kills}; stored {sum(found.values())} events, "
            f"{len(set(found))} distinct, {len(twice)} twice, {len(missing)} missing; "
            f"profile counters equal for {counters_ok}/{groups} profiles (merged pairs as one); "
            f"dead letters {status['dead_letters']}"
        )
        assert min(cluster.kills["api"], cluster.kills["worker"]) >= MIN_KILLS_EACH, cluster.kills
        assert not twice and not missing and not unexpected
        assert counters_ok == groups
        assert status["dead_letters"] == 0
    finally:
        cluster.stop()


def _check_profiles(client: httpx.Client, load: Load) -> tuple[int, int]:
    """How many profiles (a merged pair counts as one) count the events that were sent to
    them, and have exactly that many events stored under their ids."""
    paired = {member for pair in load.pairs for member in pair}
    expected: list[tuple[list[str], int]] = [
        ([first, second], load.sent_to[first] + load.sent_to[second])
        for first, second in load.pairs
    ]
    expected += [([p], n) for p, n in load.sent_to.items() if p not in paired]
    good = 0
    for members, events in expected:
        profiles = [client.get(f"/profile/{member}").json() for member in members]
        ids = {profile.get("id") for profile in profiles}
        counted = profiles[0].get("stats", {}).get("events")
        stored = client.get(f"/profile/{members[0]}/events", params={"limit": 1}).json()
        if len(ids) == 1 and counted == events and stored.get("total") == events:
            good += 1
        else:
            print(
                f"profile {members}: {[p.get('id') for p in profiles]} "
                f"events {[p.get('stats', {}).get('events') for p in profiles]} "
                f"(stored {stored.get('total')}) != {events}"
            )
    return good, len(expected)
