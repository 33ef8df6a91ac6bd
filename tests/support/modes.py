"""One `tessera serve` in each way Tessera runs, for black-box suites that must hold in all of
them: embedded or distributed storage, sync or async ingestion.

- ``embedded-sync``: SQLite, the pipeline inside the request (the default installation).
- ``embedded-async``: SQLite, the embedded queue and one queue worker inside the server.
- ``distributed-sync``: Elasticsearch records, MariaDB configuration, Redis locks and caches.
- ``distributed-async``: the same, with Redis Streams as the ingest queue and one worker.

Each installation gets its own index prefix, database and Redis prefix, removed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import mariadb
from tests.support.distributed import clean_distributed, distributed_env
from tests.support.elastic import require_elastic
from tests.support.redis_service import reachable_client
from tests.support.server import RunningServer, running_server

MODES = ("embedded-sync", "embedded-async", "distributed-sync", "distributed-async")
# The modes every black-box suite runs in (the async ones run in the suites about the queue):
# the embedded installation and the distributed one (Elasticsearch, MariaDB, Redis).
SHARED_MODES = ("embedded-sync", "distributed-sync")
ASYNC_ENV = {"TESSERA_INGEST_MODE": "async", "TESSERA_WORKERS": "1"}


def is_async(mode: str) -> bool:
    return mode.endswith("-async")


@contextmanager
def server_in_mode(
    mode: str, data_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
    env: dict[str, str] = dict(ASYNC_ENV) if is_async(mode) else {}
    prefix = database = ""
    if mode.startswith("distributed"):
        require_elastic()
        asyncio.run(mariadb.require_mariadb())
        asyncio.run(_redis_answers())
        prefix = f"tt-mode-{uuid.uuid4().hex[:10]}"
        database = f"{mariadb.PREFIX}mode_{uuid.uuid4().hex[:12]}"
        asyncio.run(mariadb.create_database(database))
        env.update(distributed_env(prefix, database))
        if is_async(mode):
            env["TESSERA_QUEUE"] = "redis"
            env["TESSERA_QUEUE_TOPIC"] = prefix
    env.update(extra_env or {})
    try:
        with running_server(data_dir, env) as server:
            yield server
    finally:
        if prefix and not os.environ.get("TESSERA_KEEP_TEST_DATA"):
            clean_distributed(prefix, database)


async def _redis_answers() -> None:
    client = await reachable_client()
    await client.aclose()


def wait_until_drained(api: httpx.Client, timeout_s: float = 120.0) -> None:
    """In async mode: until the queue has no backlog (the worker stored everything published
    so far). Answers at once in sync mode, where `/queue/status` says there is no queue."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = api.get("/queue/status")
        if answer.status_code == 200:
            status = answer.json()
            if status.get("mode") != "async" or status["queue"]["backlog"] == 0:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue did not drain within {timeout_s} s: {answer.text}")
        time.sleep(0.2)
