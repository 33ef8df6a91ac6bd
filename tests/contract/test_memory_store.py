"""The KeyValueStore contract (the workflows' memory), run once per backend.

Time is passed in (``now``), so expiry is tested with explicit instants rather than by waiting.
Adding a backend (Redis …) means one opener in ``MEMORY_BACKENDS``; the tests do not change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tessera.storage.sql.memory  # noqa: F401  (defines the kv_memory table)
from tessera.storage.automation_ports import KeyValueStore
from tessera.storage.config_database import config_schema_store
from tessera.storage.redis.client import KeySpace
from tessera.storage.redis.memory import RedisKeyValueStore
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.memory import SqlKeyValueStore
from tessera.storage.sql.stores import SqlSchemaStore
from tests.support.mariadb import mariadb_database
from tests.support.redis_service import delete_space, place_prefix, reachable_client

MemoryOpener = Callable[[Path], AbstractAsyncContextManager[KeyValueStore]]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@asynccontextmanager
async def sqlite_memory(place: Path) -> AsyncIterator[KeyValueStore]:
    engine = sqlite_engine(place)
    try:
        await SqlSchemaStore(engine).create_schema()
        yield SqlKeyValueStore(engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def mariadb_memory(place: Path) -> AsyncIterator[KeyValueStore]:
    async with mariadb_database(place) as database:
        await config_schema_store(database.engine, database.settings).create_schema()
        yield SqlKeyValueStore(database.engine)


@asynccontextmanager
async def redis_memory(place: Path) -> AsyncIterator[KeyValueStore]:
    """Keys under a prefix named after ``place``; deleted on the way out."""
    client = await reachable_client()
    keys = KeySpace(place_prefix(place))
    try:
        yield RedisKeyValueStore(client, keys)
    finally:
        await delete_space(client, keys)
        await client.aclose()


MEMORY_BACKENDS: dict[str, MemoryOpener] = {
    "sqlite": sqlite_memory,
    "mariadb": mariadb_memory,
    "redis": redis_memory,
}


@pytest.fixture(params=list(MEMORY_BACKENDS))
def open_memory(request: pytest.FixtureRequest) -> MemoryOpener:
    return MEMORY_BACKENDS[request.param]


@pytest.fixture
async def memory(open_memory: MemoryOpener, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    async with open_memory(tmp_path / "memory") as store:
        yield store


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_get_answers_what_set_kept(memory: KeyValueStore) -> None:
    await memory.set("acme", "greeting", "hello", ttl_s=None, now=T0)
    assert await memory.get("acme", "greeting", T0) == "hello"
    assert await memory.get("acme", "other", T0) is None


async def test_set_overwrites_value_and_expiry(memory: KeyValueStore) -> None:
    await memory.set("acme", "k", 1, ttl_s=10, now=T0)
    await memory.set("acme", "k", 2, ttl_s=None, now=T0)
    assert await memory.get("acme", "k", at(1000)) == 2
    await memory.set("acme", "k", 3, ttl_s=5, now=at(1000))
    assert await memory.get("acme", "k", at(1004)) == 3
    assert await memory.get("acme", "k", at(1005)) is None


async def test_value_expires_when_its_ttl_runs_out(memory: KeyValueStore) -> None:
    await memory.set("acme", "k", "v", ttl_s=60, now=T0)
    assert await memory.get("acme", "k", at(59.5)) == "v"
    assert await memory.get("acme", "k", at(60)) is None
    assert await memory.get("acme", "k", at(3600)) is None


async def test_an_expired_key_can_be_set_again(memory: KeyValueStore) -> None:
    await memory.set("acme", "k", "old", ttl_s=1, now=T0)
    await memory.set("acme", "k", "new", ttl_s=None, now=at(10))
    assert await memory.get("acme", "k", at(10)) == "new"


async def test_delete_tells_whether_there_was_a_key(memory: KeyValueStore) -> None:
    await memory.set("acme", "k", "v", ttl_s=None, now=T0)
    assert await memory.delete("acme", "k") is True
    assert await memory.get("acme", "k", T0) is None
    assert await memory.delete("acme", "k") is False


async def test_purge_expired_removes_only_expired_keys(memory: KeyValueStore) -> None:
    await memory.set("acme", "short", 1, ttl_s=10, now=T0)
    await memory.set("acme", "long", 2, ttl_s=1000, now=T0)
    await memory.set("acme", "forever", 3, ttl_s=None, now=T0)
    await memory.set("other", "short", 4, ttl_s=10, now=T0)
    assert await memory.purge_expired(at(5)) == 0
    assert await memory.purge_expired(at(10)) == 2
    assert await memory.get("acme", "long", at(10)) == 2
    assert await memory.get("acme", "forever", at(10)) == 3
    # Purged keys are gone for good: deleting one finds nothing.
    assert await memory.delete("acme", "short") is False
    assert await memory.purge_expired(at(10)) == 0


async def test_tenants_do_not_see_each_other(memory: KeyValueStore) -> None:
    await memory.set("acme", "k", "acme's", ttl_s=None, now=T0)
    await memory.set("other", "k", "other's", ttl_s=None, now=T0)
    assert await memory.get("acme", "k", T0) == "acme's"
    assert await memory.get("other", "k", T0) == "other's"
    assert await memory.delete("other", "k") is True
    assert await memory.get("acme", "k", T0) == "acme's"
    assert await memory.get("third", "k", T0) is None


@pytest.mark.parametrize(
    "value",
    [
        "text with ünïcode ✓",
        "",
        0,
        -17,
        2**53,
        3.25,
        True,
        False,
        [],
        [1, "two", None, {"three": 3}],
        {},
        {"nested": {"list": [1.5, {"deep": [True]}], "null": None}, "n": 1},
    ],
    ids=repr,
)
async def test_every_kind_of_json_value_comes_back_equal(memory: KeyValueStore, value: Any) -> None:
    await memory.set("acme", "k", value, ttl_s=None, now=T0)
    found = await memory.get("acme", "k", T0)
    assert found == value
    assert type(found) is type(value)


async def test_keys_are_exact(memory: KeyValueStore) -> None:
    await memory.set("acme", "Key", "upper", ttl_s=None, now=T0)
    await memory.set("acme", "key", "lower", ttl_s=None, now=T0)
    await memory.set("acme", "key:with/odd chars%_", "odd", ttl_s=None, now=T0)
    assert await memory.get("acme", "Key", T0) == "upper"
    assert await memory.get("acme", "key", T0) == "lower"
    assert await memory.get("acme", "key:with/odd chars%_", T0) == "odd"
    assert await memory.get("acme", "key:with/odd chars%", T0) is None


async def test_concurrent_first_sets_of_one_key_from_two_stores_both_succeed(
    open_memory: MemoryOpener, tmp_path: Path
) -> None:
    """Two processes setting a key nobody set yet: neither fails, one value is kept."""
    place = tmp_path / "shared"
    async with open_memory(place) as first, open_memory(place) as second:
        for round_number in range(10):
            key = f"counter-{round_number}"
            await asyncio.gather(
                first.set("acme", key, "first", ttl_s=None, now=T0),
                second.set("acme", key, "second", ttl_s=None, now=T0),
            )
            assert await first.get("acme", key, T0) in {"first", "second"}
