"""The settings of a test installation in distributed mode (Elasticsearch records, MariaDB
configuration, Redis locks and caches) under its own prefix and database, and its removal."""

from __future__ import annotations

import asyncio

from elasticsearch import Elasticsearch

from tests.support import mariadb
from tests.support.elastic import URL as ELASTIC_URL
from tests.support.elastic import drop_prefix
from tests.support.redis_service import REDIS_HOST, REDIS_PORT, new_client


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
    }


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
