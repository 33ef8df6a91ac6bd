"""The settings of a test installation in distributed mode (Elasticsearch records, MariaDB
configuration, Redis locks and caches) under its own prefix and database, and its removal."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from elasticsearch import Elasticsearch

from tests.support import mariadb
from tests.support.elastic import URL as ELASTIC_URL
from tests.support.elastic import drop_prefix, require_elastic
from tests.support.redis_service import REDIS_HOST, REDIS_PORT, new_client, reachable_client


def distributed_env(prefix: str, database: str, elastic_url: str = ELASTIC_URL) -> dict[str, str]:
    return {
        "ELASTIC_HOST": elastic_url,
        "ELASTIC_INDEX_SHARDS": "1",
        "ELASTIC_INDEX_REPLICAS": "0",
        "TESSERA_ELASTIC_INDEX_PREFIX": prefix,
        "MYSQL_HOST": mariadb.HOST,
        "MYSQL_PORT": str(mariadb.PORT),
        "MYSQL_USERNAME": mariadb.USER,
        "MYSQL_PASSWORD": mariadb.PASSWORD,
        "MYSQL_DATABASE": database,
        "REDIS_HOST": REDIS_HOST,
        "REDIS_PORT": str(REDIS_PORT),
        "TESSERA_REDIS_PREFIX": prefix,
        "TESSERA_WORKFLOW_CACHE_SECONDS": "0",
        "TESSERA_SOURCE_CACHE_SECONDS": "0",
        # Black-box suites read what they just wrote through searches (listings, segments):
        # each bulk refreshes. The hot path is the same (reads by id, no look-ups before a
        # write); the suites about the production path itself (integrity, faults, crashes)
        # run with the default, "false" (NO_REFRESH_ENV).
        "TESSERA_ELASTIC_WRITE_REFRESH": "true",
    }


# The default of a production installation: bulks do not refresh, searches lag.
NO_REFRESH_ENV = {"TESSERA_ELASTIC_WRITE_REFRESH": "false"}


def clean_distributed(prefix: str, database: str) -> None:
    """Drop the indices, the database and the Redis keys of one distributed installation."""
    client = Elasticsearch(ELASTIC_URL, request_timeout=30)
    try:
        drop_prefix(client, prefix)
    finally:
        client.close()
    asyncio.run(mariadb.drop_databases({database}))

    async def drop_keys() -> None:
        client = new_client()
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    asyncio.run(drop_keys())


@dataclass(frozen=True)
class Installation:
    """One distributed installation's names and the environment of its processes."""

    prefix: str
    database: str
    env: dict[str, str]


@contextmanager
def distributed_installation(name: str) -> Iterator[Installation]:
    """A fresh installation (empty prefix, new database), removed afterwards; the test is
    skipped, loudly, when one of the servers cannot be reached."""
    require_elastic()
    asyncio.run(mariadb.require_mariadb())

    async def ping_redis() -> None:
        await (await reachable_client()).aclose()

    asyncio.run(ping_redis())
    prefix = f"tt-{name}-{uuid.uuid4().hex[:10]}"
    database = f"{mariadb.PREFIX}{name.replace('-', '_')}_{uuid.uuid4().hex[:12]}"
    asyncio.run(mariadb.create_database(database))
    try:
        yield Installation(prefix, database, distributed_env(prefix, database))
    finally:
        if os.environ.get("TESSERA_KEEP_TEST_DATA"):
            print(f"kept: prefix {prefix}, database {database}")
        else:
            clean_distributed(prefix, database)
