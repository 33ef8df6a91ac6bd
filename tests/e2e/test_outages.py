"""Outages, black box: `tessera serve` in distributed mode reaches Redis, MariaDB or
Elasticsearch through a TCP relay that the test resets or silences while `/track` traffic runs.

What a client must see (docs/distributed.md, "When a server fails"):
- every answer is 200, or 503 with `Retry-After`; never a 500, never a hang: each comes within
  the configured timeouts (plus a margin);
- once the server is back, requests succeed again;
- with its own event ids and retries of the 503s, every acknowledged event is stored exactly
  once, and the profile's and the session's counters equal the stored events;
- while Redis or MariaDB (not the record store) is away, no request is answered 503 after its
  records were committed (its retry would find its events already stored).

And an exhausted pool (more concurrent requests than MySQL connections) answers 200 or 503,
never a 500; more concurrent requests than Redis's pool has connections do not exhaust it:
`/track`'s Redis commands (the lock scripts) pipeline on the lean connection
(storage/redis/wire.py), not on pooled ones.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import pytest

from tessera.storage.redis.outage import RedisUnavailable
from tests.support import mariadb
from tests.support.distributed import NO_REFRESH_ENV, clean_distributed, distributed_env
from tests.support.elastic import URL as ELASTIC_URL
from tests.support.elastic import make_searchable, require_elastic
from tests.support.outage_load import (
    ApiProbe,
    TrackLoad,
    Traffic,
    logged_problems,
    run_with_outage,
    stored_events,
)
from tests.support.redis_service import REDIS_HOST, REDIS_PORT, reachable_client
from tests.support.server import RunningServer, start_server
from tests.support.sources import ServerSource, make_server_source
from tests.support.tcp_proxy import RelayThread

PASSWORD = "outage-test-password-42"
Service = Literal["redis", "mariadb", "elastic"]

# Short timeouts, so an outage is felt (and answered) within a second or two. Redis's command
# timeout must be above 1 s (the Redis Streams queue blocks that long); a lock whose holder
# lost Redis is waited for 2 s at most, and gone within 2 s.
CONNECT_TIMEOUT_S = 1.0
OPERATION_TIMEOUT_S = 1.5
POOL_TIMEOUT_S = 1.0
LOCK_WAIT_S = 2.0
ELASTIC_TIMEOUT_S = 2.0
ELASTIC_RETRY_BUDGET_S = 1.0
TIMEOUTS = {
    "TESSERA_REDIS_CONNECT_TIMEOUT_SECONDS": str(CONNECT_TIMEOUT_S),
    "TESSERA_REDIS_TIMEOUT_SECONDS": str(OPERATION_TIMEOUT_S),
    "TESSERA_REDIS_POOL_TIMEOUT_SECONDS": str(POOL_TIMEOUT_S),
    "TESSERA_LOCK_TTL_SECONDS": str(LOCK_WAIT_S),
    "TESSERA_LOCK_WAIT_SECONDS": str(LOCK_WAIT_S),
    "TESSERA_MYSQL_CONNECT_TIMEOUT_SECONDS": str(CONNECT_TIMEOUT_S),
    "TESSERA_MYSQL_TIMEOUT_SECONDS": str(OPERATION_TIMEOUT_S),
    "MYSQL_CONNECTION__POOL_TIMEOUT": str(POOL_TIMEOUT_S),
    "TESSERA_ELASTIC_TIMEOUT_SECONDS": str(ELASTIC_TIMEOUT_S),
    "TESSERA_ELASTIC_RETRY_BUDGET_SECONDS": str(ELASTIC_RETRY_BUDGET_S),
    # A search is bounded by its own time (a long search is no outage): short here, so that
    # one caught by the outage answers within the API's bound.
    "TESSERA_SEARCH_TIMEOUT_SECONDS": "2",
}
# The slowest answer allowed during an outage (docs/distributed.md, "When a server fails"),
# plus a margin for a 2-core machine shared with other tests:
# - Redis: a free connection, then one command's timeout (the first failure ends the request;
#   the cleanup after it is not waited for); or the wait for a lock whose holder lost Redis;
# - MariaDB: a free connection, then the ping of a pooled connection and the greeting of the
#   new one that replaces it, each up to the read timeout;
# - Elasticsearch: a commit may first wait for a bulk slot held by a bulk that waits out its
#   timeout (when silent) and retry budget, then do the same.
MARGIN_S = 1.5
BOUND_S = {
    ("redis", "hang"): max(LOCK_WAIT_S, POOL_TIMEOUT_S + OPERATION_TIMEOUT_S) + MARGIN_S,
    ("redis", "reset"): max(LOCK_WAIT_S, POOL_TIMEOUT_S + OPERATION_TIMEOUT_S) + MARGIN_S,
    ("mariadb", "hang"): POOL_TIMEOUT_S + 2 * OPERATION_TIMEOUT_S + MARGIN_S,
    ("mariadb", "reset"): POOL_TIMEOUT_S + 2 * OPERATION_TIMEOUT_S + MARGIN_S,
    ("elastic", "hang"): 2 * (ELASTIC_TIMEOUT_S + ELASTIC_RETRY_BUDGET_S) + MARGIN_S,
    ("elastic", "reset"): 2 * ELASTIC_RETRY_BUDGET_S + MARGIN_S,
}
WORKERS = 8


def _target(service: Service) -> tuple[str, int]:
    if service == "redis":
        return REDIS_HOST, REDIS_PORT
    if service == "mariadb":
        return mariadb.HOST, mariadb.PORT
    host, port = ELASTIC_URL.removeprefix("http://").split(":")
    return host, int(port)


def _through_relay(env: dict[str, str], service: Service, port: int) -> dict[str, str]:
    if service == "redis":
        return {**env, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port)}
    if service == "mariadb":
        return {**env, "MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": str(port)}
    return {**env, "ELASTIC_HOST": f"http://127.0.0.1:{port}"}


def _require_services() -> None:
    require_elastic()
    asyncio.run(mariadb.require_mariadb())

    async def redis() -> None:
        client = await reachable_client()
        await client.aclose()

    asyncio.run(redis())


@dataclass
class Installation:
    server: RunningServer
    relay: RelayThread
    admin: httpx.Client
    # The Elasticsearch index prefix of the installation.
    prefix: str
    # The source the load comes from (the operator's own system: its event ids are kept).
    source: ServerSource


@pytest.fixture
def installation(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Service, Installation]]:
    """`tessera serve` (distributed) reaching the service of the test's parameter through a
    relay; an event source `web`."""
    service: Service = request.param
    _require_services()
    relay = RelayThread(*_target(service))
    relay.switch("up")
    prefix = f"tt-out-{uuid.uuid4().hex[:10]}"
    database = f"{mariadb.PREFIX}out_{uuid.uuid4().hex[:12]}"
    asyncio.run(mariadb.create_database(database))
    # The production default: bulks do not refresh (NO_REFRESH_ENV).
    settings = {**distributed_env(prefix, database), **NO_REFRESH_ENV, **TIMEOUTS}
    env = _through_relay(settings, service, relay.port)
    server = None
    try:
        server = start_server(tmp_path / "data", env, admin_password=PASSWORD)
        admin = server.client(server.token())
        source = make_server_source(admin, "Web", id="web")
        yield service, Installation(server, relay, admin, prefix, source)
    finally:
        relay.switch("up")
        if server is not None:
            server.stop()
        relay.close()
        if not os.environ.get("TESSERA_KEEP_TEST_DATA"):
            clean_distributed(prefix, database)


# Management API requests that need the configuration database, Elasticsearch and (for the
# token) Redis.
PROBED = [
    ("GET", "/event-sources", None),
    ("POST", "/profiles/search", {"limit": 1}),
]


def _traffic_through(
    installation: Installation, mode: Literal["hang", "reset"], run: str
) -> tuple[Traffic, ApiProbe, bool]:
    server = installation.server
    load = TrackLoad(server.base_url, installation.source, run, WORKERS)
    probe = ApiProbe(server.base_url, server.token(), PROBED)
    drained = asyncio.run(
        run_with_outage(
            load,
            cut=lambda: installation.relay.switch(mode),
            restore=lambda: installation.relay.switch("up"),
            before_s=1.5,
            during_s=5.0,
            after_s=2.0,
            drain_s=12.0,
            probe=probe,
        )
    )
    return load.traffic, probe, drained


def _check_stored_exactly_once(admin: httpx.Client, traffic: Traffic) -> list[str]:
    """Asserts every acknowledged event is stored once and nothing else is; answers where a
    profile's or a session's event counter differs from the events stored."""
    make_searchable()  # events are listed by a search: see every acknowledged one
    everything = stored_events(admin, traffic.run)
    wrong_counters: list[str] = []
    for visitor in traffic.visitors:
        stored = everything.get(visitor.index, [])
        assert sorted(stored) == sorted(visitor.acknowledged), (
            f"visitor {visitor.index}: {len(visitor.acknowledged)} acknowledged, "
            f"{len(stored)} stored, {len(set(stored))} distinct"
        )
        assert visitor.profile_id is not None
        profile = admin.get(f"/profile/{visitor.profile_id}").json()
        session = admin.get(f"/session/{visitor.session}").json()
        counted = {"profile": profile["stats"]["events"], "session": session["events"]}
        wrong_counters += [
            f"visitor {visitor.index}: {len(stored)} events stored, {kind} counts {count}"
            for kind, count in counted.items()
            if count != len(stored)
        ]
    return wrong_counters


@pytest.mark.parametrize("mode", ["hang", "reset"])
@pytest.mark.parametrize("installation", ["redis", "mariadb", "elastic"], indirect=True)
def test_an_outage_is_answered_503_in_time_and_nothing_is_lost_or_doubled(
    installation: tuple[Service, Installation], mode: Literal["hang", "reset"]
) -> None:
    service, setup = installation
    run = f"{service}-{mode}-{uuid.uuid4().hex[:6]}"
    traffic, probe, drained = _traffic_through(setup, mode, run)
    print(f"\n{service} {mode}: {traffic.summary()}")
    bound = BOUND_S[service, mode]
    violations = traffic.violations(bound)
    assert not violations, (
        [(a.status, round(a.seconds, 2), a.retry_after, a.detail) for a in violations[:10]],
        logged_problems(setup.server.log()),
    )
    print(f"API while away: {sorted({(path, status) for path, status, *_ in probe.answers})}")
    assert probe.answers
    assert not probe.violations(bound), (
        probe.violations(bound)[:10],
        logged_problems(setup.server.log()),
    )
    assert traffic.statuses().get(503, 0) > 0, "the outage was not felt: the test tests nothing"
    assert drained, "requests did not succeed again once the server was back"
    if service != "elastic":
        # The records' store stayed up: a 503 always came before the commit.
        assert not traffic.stored_again(), [
            (a.event_id, a.warnings) for a in traffic.stored_again()[:5]
        ]
    # With Elasticsearch silent, a bulk that timed out may be applied when it comes back,
    # after its request gave up and let its locks go (the relay delivers what it held, as a
    # healed network or a resumed node would). Its profile and session writes carry their
    # locks' fencing tokens as versions, so landing after a newer commit they are refused
    # instead of putting a counter back (storage/elastic/writer.py).
    assert not _check_stored_exactly_once(setup.admin, traffic)
    if service == "elastic":
        print(f"late writes Elasticsearch refused: {_version_conflicts(setup.prefix)}")


def _version_conflicts(prefix: str) -> int:
    """How many writes of the installation's profiles and sessions Elasticsearch refused for
    their version (a write of an earlier lock holder that arrived after a later one's)."""
    indices = f"{prefix}.*.profile.*,{prefix}.*.session.*"
    answer = httpx.get(f"{ELASTIC_URL}/{indices}/_stats/indexing", timeout=10).json()
    return int(answer["_all"]["primaries"]["indexing"]["index_failed_due_to_version_conflict"])


# Pools small enough (and, for MySQL, whose short statements free a connection quickly, a
# wait short enough) that a burst finds them exhausted.
POOL_SIZES = {
    # A wait so short that the burst would find the pool taken even on a busy machine, were
    # /track's commands on pooled connections (they were, before storage/redis/wire.py).
    "redis": {"TESSERA_REDIS_POOL_SIZE": "2", "TESSERA_REDIS_POOL_TIMEOUT_SECONDS": "0.05"},
    "mariadb": {
        "MYSQL_CONNECTION__POOL": "1",
        "MYSQL_CONNECTION__MAX_OVERFLOW": "0",
        "MYSQL_CONNECTION__POOL_TIMEOUT": "0.1",
    },
}
BURST = 150
# A burst of this many on two shared cores is slow without any outage: the bound is "no hang".
BURST_BOUND_S = 15.0


@pytest.mark.parametrize("service", ["redis", "mariadb"])
def test_more_concurrent_requests_than_pooled_connections_answer_200_or_503(
    tmp_path: Path, service: Service
) -> None:
    _require_services()
    prefix = f"tt-pool-{uuid.uuid4().hex[:10]}"
    database = f"{mariadb.PREFIX}pool_{uuid.uuid4().hex[:12]}"
    asyncio.run(mariadb.create_database(database))
    env = {**distributed_env(prefix, database), **TIMEOUTS, **POOL_SIZES[service]}
    server = None
    try:
        server = start_server(tmp_path / "data", env, admin_password=PASSWORD)
        admin = server.client(server.token())
        source = make_server_source(admin, "Web", id="web")
        run = f"pool-{service}-{uuid.uuid4().hex[:6]}"
        # Retried after a second (not Retry-After's 2 s, to keep it short): a client hammering
        # an overloaded server at once would measure the hammering, not the pool.
        load = TrackLoad(server.base_url, source, run, BURST, each=1, retry_pause_s=1.0)

        async def burst() -> bool:
            await load.start()
            return await load.drain(25.0)

        drained = asyncio.run(burst())
        traffic = load.traffic
        print(f"\n{service} pool, {BURST} at once: {traffic.summary()}")
        violations = traffic.violations(BURST_BOUND_S)
        assert not violations, (
            [(a.status, round(a.seconds, 2), a.retry_after, a.detail) for a in violations[:10]],
            logged_problems(server.log()),
        )
        if service == "redis":
            # The hot path's scripts take no pooled connection: whatever 503 the burst met
            # (MariaDB's pool, on a busy machine) none is Redis's.
            redis_503 = [a for a in traffic.answers if RedisUnavailable.public_message in a.detail]
            assert not redis_503, "a /track request waited for a pooled Redis connection"
        else:
            assert traffic.statuses().get(503, 0) > 0, "the pool was never exhausted"
        assert drained
        assert sum(len(v.acknowledged) for v in traffic.visitors) == BURST
        assert not _check_stored_exactly_once(admin, traffic)
    finally:
        if server is not None:
            server.stop()
        if not os.environ.get("TESSERA_KEEP_TEST_DATA"):
            clean_distributed(prefix, database)
