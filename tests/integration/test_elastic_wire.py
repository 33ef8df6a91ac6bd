"""The lean connections (storage/elastic/wire.py) against the real Elasticsearch, and against
small local servers standing in for a cluster that hangs, refuses or is overloaded: the same
answers and the same exceptions as the official client, bounded waits, no answer ever read
as another request's."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, AsyncElasticsearch, BadRequestError

from tessera.storage.elastic.client import ElasticConnection, is_outage
from tessera.storage.elastic.wire import ElasticWire
from tests.support.elastic import URL, require_elastic

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
# A request's head and body → the whole answer to send.
Respond = Callable[[bytes, bytes], Awaitable[bytes]]


@pytest.fixture
async def index() -> AsyncIterator[str]:
    require_elastic()
    name = f"tt-wire-{uuid.uuid4().hex[:12]}"
    client = AsyncElasticsearch(URL)
    await client.indices.create(index=name, settings={"number_of_replicas": 0})
    try:
        yield name
    finally:
        await client.indices.delete(index=name, ignore_unavailable=True)
        await client.close()


def wire_to(url: str, *, connections_per_host: int = 16, **options: object) -> ElasticWire:
    connection = ElasticConnection(hosts=(url,), **options)  # type: ignore[arg-type]
    return ElasticWire(connection, connections_per_host=connections_per_host)


async def local_server(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def answering_server(respond: Respond) -> tuple[asyncio.Server, str]:
    """A local server answering the requests of each connection in order, with ``respond``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, body = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(await respond(head, body))
            await writer.drain()

    return await local_server(handler)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def bulk_body(action: str, index: str, prefix: str, count: int) -> bytes:
    """NDJSON of `count` documents `{"n": i}` with ids prefix + i."""
    return b"".join(
        msgspec.json.encode({action: {"_index": index, "_id": f"{prefix}{i}"}})
        + b"\n"
        + msgspec.json.encode({"n": i})
        + b"\n"
        for i in range(count)
    )


def answer(status: int, body: object) -> bytes:
    data = msgspec.json.encode(body)
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n"
    ).encode() + data


async def test_bulk_and_mget_answer_as_the_official_client(index: str) -> None:
    wire = wire_to(URL)
    official = AsyncElasticsearch(URL)
    try:
        body = bulk_body("create", index, "d", 3)
        stored = await wire.bulk(body, refresh="false", filter_path=["errors", "items.*.status"])
        assert stored == {"errors": False, "items": [{"create": {"status": 201}}] * 3}
        again = await wire.bulk(body, refresh="false", filter_path=["errors", "items.*.status"])
        assert again["errors"] is True  # insert-once: the same ids are refused, 409 each
        assert [item["create"]["status"] for item in again["items"]] == [409, 409, 409]

        docs = [{"_index": index, "_id": "d1"}, {"_index": index, "_id": "absent"}]
        # Realtime: the documents are seen before any refresh.
        mine = await wire.mget(docs, realtime=True)
        theirs = (await official.mget(docs=docs, realtime=True)).body
        assert mine == theirs
        assert mine["docs"][0]["_source"] == {"n": 1}
        assert mine["docs"][1]["found"] is False
    finally:
        await wire.close()
        await official.close()


async def test_an_error_status_is_the_official_clients_exception(index: str) -> None:
    wire = wire_to(URL)
    official = AsyncElasticsearch(URL)
    try:
        with pytest.raises(BadRequestError) as mine:
            await wire.bulk(b"not json\n", refresh="false", filter_path=["errors"])
        with pytest.raises(BadRequestError) as theirs:
            await official.bulk(operations=b"not json\n")  # type: ignore[arg-type]
        assert mine.value.meta.status == theirs.value.meta.status == 400
        assert mine.value.message == theirs.value.message
        assert not is_outage(mine.value)
    finally:
        await wire.close()
        await official.close()


async def test_many_concurrent_calls_each_get_their_own_answer(index: str) -> None:
    wire = wire_to(URL)
    try:
        body = bulk_body("index", index, "c", 50)
        await wire.bulk(body, refresh="false", filter_path=["errors"])

        async def read(i: int) -> object:
            found = await wire.mget([{"_index": index, "_id": f"c{i}"}])
            return found["docs"][0]["_source"]["n"]

        # More callers than connections: they wait for one, and never mix up answers.
        assert await asyncio.gather(*(read(i % 50) for i in range(200))) == [
            i % 50 for i in range(200)
        ]
    finally:
        await wire.close()


async def test_a_silent_server_times_out_and_its_connection_is_not_reused() -> None:
    answered = asyncio.Event()
    requests = 0

    async def respond(_head: bytes, _body: bytes) -> bytes:
        nonlocal requests
        requests += 1
        if requests > 1:
            return answer(200, {"docs": [{"fresh": True}]})
        # The first request is answered late: after its caller gave up.
        await asyncio.sleep(0.5)
        answered.set()  # the answer is written before the test runs again
        return answer(200, {"docs": [{"late": True}]})

    server, url = await answering_server(respond)
    wire = wire_to(url, request_timeout_s=0.2)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionTimeout) as timed_out:
            await wire.mget([{"_index": "i", "_id": "1"}])
        assert asyncio.get_running_loop().time() - started < 0.45
        assert is_outage(timed_out.value)
        assert requests == 1  # a timeout is never sent again
        await asyncio.wait_for(answered.wait(), 2)
        # The late answer went to the closed connection, not to the next caller.
        assert await wire.mget([{"_index": "i", "_id": "2"}]) == {"docs": [{"fresh": True}]}
    finally:
        await wire.close()
        server.close()


async def test_a_cancelled_call_leaves_no_answer_behind_for_the_next() -> None:
    async def respond(_head: bytes, body: bytes) -> bytes:
        asked = msgspec.json.decode(body)["docs"][0]["_id"]
        await asyncio.sleep(0.2 if asked == "slow" else 0)
        return answer(200, {"docs": [{"_id": asked}]})

    server, url = await answering_server(respond)
    wire = wire_to(url, connections_per_host=1)
    try:
        slow = asyncio.create_task(wire.mget([{"_index": "i", "_id": "slow"}]))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        found = await wire.mget([{"_index": "i", "_id": "next"}])
        assert found == {"docs": [{"_id": "next"}]}
    finally:
        await wire.close()
        server.close()


async def test_overload_is_sent_again_and_then_reported_as_an_outage() -> None:
    statuses = [503, 200]
    seen: list[bytes] = []

    async def respond(head: bytes, _body: bytes) -> bytes:
        seen.append(head)
        status = statuses.pop(0) if statuses else 503
        return answer(status, {"docs": []} if status == 200 else {"error": "busy"})

    server, url = await answering_server(respond)
    wire = wire_to(url, retries=1, username="writer", password="s3cret")
    try:
        # 503 then 200: answered by the second attempt.
        assert await wire.mget([{"_index": "i", "_id": "1"}]) == {"docs": []}
        assert len(seen) == 2
        expected = base64.b64encode(b"writer:s3cret")
        assert all(b"Authorization: Basic " + expected in head for head in seen)
        # 503 twice: the retry budget is spent, the answer is the outage.
        with pytest.raises(ApiError) as overloaded:
            await wire.mget([{"_index": "i", "_id": "2"}])
        assert overloaded.value.meta.status == 503
        assert is_outage(overloaded.value)
    finally:
        await wire.close()
        server.close()


async def test_no_server_is_a_connection_error() -> None:
    server, url = await local_server(lambda _r, _w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    wire = wire_to(url, retries=2)
    try:
        with pytest.raises(TransportConnectionError) as refused:
            await wire.mget([{"_index": "i", "_id": "1"}])
        assert is_outage(refused.value)
    finally:
        await wire.close()
