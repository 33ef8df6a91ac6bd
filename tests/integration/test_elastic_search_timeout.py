"""A search with a time limit (TESSERA_SEARCH_TIMEOUT_SECONDS) on a real Elasticsearch: one
that runs past it is stopped and raises SearchTimedOut (503 with Retry-After for the API),
quickly and without being retried; the same search without a limit still answers."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from elastic_transport import BaseAsyncNode
from elasticsearch import AsyncElasticsearch, Elasticsearch
from elasticsearch.helpers import bulk

from tessera.errors import SearchTimedOut
from tessera.query import parse
from tessera.storage.elastic.fields import search_fields
from tessera.storage.elastic.query import search_page, to_query
from tessera.storage.search import SearchRequest
from tests.integration.test_elastic_query import MAPPINGS, URL, es  # noqa: F401 - fixture

DOCS = 20_000
# Leading-wildcard substring queries over every term: slow on purpose.
SLOW = " OR ".join(f"profile@traits.text CONTAINS 'q{i}z'" for i in range(200))


@pytest.fixture(scope="module")
def crowded(es: Elasticsearch) -> Iterator[str]:  # noqa: F811 - the fixture above
    name = f"tessera-test-timeout-{uuid.uuid4().hex}"
    es.indices.create(
        index=name, mappings=MAPPINGS, settings={"number_of_shards": 1, "number_of_replicas": 0}
    )
    actions = (
        {
            "_index": name,
            "_id": str(n),
            "_source": {
                "id": str(n),
                "updated": float(n),
                **search_fields({"traits": {"text": f"text {n} of visitor {n * 7}"}}),
            },
        }
        for n in range(DOCS)
    )
    bulk(es, actions, refresh=True, chunk_size=2000)
    yield name
    es.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture
async def client() -> AsyncIterator[AsyncElasticsearch]:
    async with AsyncElasticsearch(URL, request_timeout=60) as async_client:
        yield async_client


def count_sent(client: AsyncElasticsearch) -> list[str]:
    """Records every request the client's nodes send, retries included (the transport retries
    inside its own perform_request, so the count is taken one level below, at each node)."""
    sent: list[str] = []
    for node in client.transport.node_pool.all():
        # The pool is typed with the sync BaseNode; an async client's nodes are async ones.
        assert isinstance(node, BaseAsyncNode)
        send = node.perform_request

        async def counted(method: str, target: str, *args: Any, send: Any = send, **kw: Any) -> Any:
            sent.append(f"{method} {target}")
            return await send(method, target, *args, **kw)

        # Replacing a method on the instance is the point here: mypy refuses it unless told.
        node.perform_request = counted  # type: ignore[method-assign]
    return sent


async def test_a_search_past_its_time_is_stopped(client: AsyncElasticsearch, crowded: str) -> None:
    query = to_query(parse(SLOW), "profile")
    whole = await search_page(
        client,
        crowded,
        SearchRequest(condition=None, limit=1),
        query=query,
        moment_field="updated",
        id_field="id",
    )
    assert whole.total == 0  # it runs to the end without a limit
    sent = count_sent(client)
    started = time.perf_counter()
    with pytest.raises(SearchTimedOut, match="TESSERA_SEARCH_TIMEOUT_SECONDS"):
        await search_page(
            client,
            crowded,
            SearchRequest(condition=None, limit=1, timeout_s=0.005),
            query=query,
            moment_field="updated",
            id_field="id",
        )
    elapsed = time.perf_counter() - started
    assert len(sent) == 1, sent  # sent once, never retried
    # Elasticsearch looks at the clock between segments, and the client gives up 1 s after; the
    # bound is loose because a busy machine (the full suite beside three JVMs) stretches both.
    assert elapsed < 5.0
