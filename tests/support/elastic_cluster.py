"""The real Elasticsearch of `scripts/services` for the retention and backup tests.

Every test gets an index prefix of its own (so it sees only what it made) and removes its
indices and templates afterwards; the tests skip, loudly, only when that Elasticsearch cannot
be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from elasticsearch import AsyncElasticsearch

from tessera.storage.elastic.naming import KINDS, Names
from tessera.storage.elastic.schema import ElasticSchema, IndexShape
from tests.support.services import service_missing

URL = os.environ.get("ELASTIC_TEST_URL", "http://127.0.0.1:9200")
# One node: one shard and no replica per index keeps every test index green and quick.
SMALL = {kind: IndexShape(shards=1, replicas=0) for kind in KINDS}


async def reachable_client() -> AsyncElasticsearch:
    client = AsyncElasticsearch(URL, request_timeout=30)
    try:
        await client.cluster.health(wait_for_status="yellow", timeout="10s")
    except Exception as error:  # noqa: BLE001 - any failure to reach it is a reason to skip
        await client.close()
        reason = f"{type(error).__name__}: {error}"[:200]
        service_missing(
            f"Elasticsearch at {URL} cannot be reached ({reason}); run scripts/services up"
        )
    return client


def unique_prefix(kind: str) -> str:
    return f"tt-{kind}-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def installation(
    client: AsyncElasticsearch, prefix: str
) -> AsyncIterator[tuple[Names, ElasticSchema]]:
    """The names and schema of a throwaway prefix; everything of it is deleted afterwards."""
    names = Names(prefix)
    schema = ElasticSchema(client, names, SMALL)
    await schema.create_schema()
    try:
        yield names, schema
    finally:
        await schema.drop_everything()
