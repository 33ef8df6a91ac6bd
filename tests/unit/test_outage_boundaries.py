"""The last-resort boundaries: an outage-type error of a storage client that got past its store
(no store should let one through; these say what happens if one does) answers 503 with
Retry-After, on /track and on the management API; any other unexpected error is a 500.

The errors are the real client libraries' exception classes, raised where a store would be."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncmy.errors
import httpx
import pytest
import sqlalchemy.exc
from elastic_transport import ApiResponseMeta, ConnectionTimeout, HttpHeaders, NodeConfig
from elasticsearch import ApiError
from fastapi import FastAPI
from redis import exceptions as redis_errors

from tessera.api.app import add_error_handlers
from tessera.collect.routes import CollectionApp
from tessera.model.source import EventSource
from tessera.pipeline.request import IncomingBatch, IngestResult
from tessera.pipeline.sources import SourceDirectory
from tessera.settings import load_settings
from tessera.storage.outages import is_outage
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.stores import SqlSchemaStore, SqlSourceStore


def _elastic_answer(status: int) -> ApiError:
    node = NodeConfig("http", "127.0.0.1", 9200)
    meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.01, node)
    return ApiError("refused", meta, {"error": "refused"})


def _lost_connection() -> sqlalchemy.exc.OperationalError:
    driver = asyncmy.errors.OperationalError(2013, "Lost connection to MySQL server (timeout)")
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, driver)


OUTAGES: dict[str, Callable[[], BaseException]] = {
    "redis refused": lambda: redis_errors.ConnectionError("Error 111 connecting"),
    "redis timeout": lambda: redis_errors.TimeoutError("Timeout reading from socket"),
    "redis pool": lambda: redis_errors.MaxConnectionsError("Too many connections"),
    "redis read-only replica": lambda: redis_errors.ReadOnlyError("READONLY replica"),
    "mysql pool": lambda: sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
    "mysql lost": _lost_connection,
    "elastic timeout": lambda: ConnectionTimeout("timed out"),
    "elastic 503": lambda: _elastic_answer(503),
    "elastic 429": lambda: _elastic_answer(429),
}
BUGS: dict[str, Callable[[], BaseException]] = {
    "redis wrong type": lambda: redis_errors.ResponseError("WRONGTYPE Operation"),
    "mysql duplicate": lambda: sqlalchemy.exc.IntegrityError(
        "INSERT", {}, asyncmy.errors.IntegrityError(1062, "Duplicate entry")
    ),
    "mysql syntax": lambda: sqlalchemy.exc.ProgrammingError(
        "SELEC", {}, asyncmy.errors.ProgrammingError(1064, "syntax")
    ),
    "elastic 400": lambda: _elastic_answer(400),
    "plain bug": lambda: ValueError("a bug"),
}


EVERY = {**OUTAGES, **BUGS}


@pytest.mark.parametrize("name", EVERY)
def test_outages_are_told_from_bugs(name: str) -> None:
    assert is_outage(EVERY[name]()) is (name in OUTAGES)


@pytest.fixture
async def sources(tmp_path: Path) -> AsyncIterator[SourceDirectory]:
    engine = sqlite_engine(tmp_path)
    try:
        await SqlSchemaStore(engine).create_schema()
        store = SqlSourceStore(engine)
        await store.save(EventSource("web", "default", "Web", datetime.now(UTC)))
        yield SourceDirectory(store, ttl_s=60)
    finally:
        await engine.dispose()


async def _not_found(_scope: Any, _receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _collection(sources: SourceDirectory, error: BaseException) -> httpx.AsyncClient:
    async def failing_intake(_batch: IncomingBatch) -> IngestResult:
        raise error

    app = CollectionApp(
        settings=load_settings(),
        sources=sources,
        intake=failing_intake,
        fallback=_not_found,
        is_outage=is_outage,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


TRACK = {"source": {"id": "web"}, "events": [{"type": "page-view"}]}


@pytest.mark.parametrize("name", EVERY)
async def test_track_answers_an_outage_that_got_through_503_and_a_bug_500(
    sources: SourceDirectory, name: str
) -> None:
    async with _collection(sources, EVERY[name]()) as client:
        answer = await client.post("/track", json=TRACK)
    assert answer.headers["access-control-allow-origin"] == "*"
    if name in OUTAGES:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
    else:
        assert answer.status_code == 500
        assert answer.json() == {"detail": "internal error (logged)"}
        assert "retry-after" not in answer.headers


def _api(error: BaseException) -> httpx.AsyncClient:
    api = FastAPI()
    add_error_handlers(api)

    @api.get("/fails")
    async def fails() -> None:
        raise error

    transport = httpx.ASGITransport(app=api, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


@pytest.mark.parametrize("name", EVERY)
async def test_the_api_answers_an_outage_that_got_through_503_and_a_bug_500(name: str) -> None:
    async with _api(EVERY[name]()) as client:
        answer = await client.get("/fails")
    if name in OUTAGES:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
    else:
        assert answer.status_code == 500
