"""The cache work a lock set carries (``core/locks.LockSetLike``): reading ahead the
records its locks guard, making them misses before a commit, putting the committed versions
back when letting go. Run on the in-process locks and cache and on Redis, where each of the
three rides in one script with the locks' own work (storage/redis/locks.py).

"Another process" is a second cache on its own Redis connection over the same keys (the
in-process cache stands for both: it can only serve one process).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tessera.core.cache import CacheKeys, CachePut, RecordCache, RecordCachePort
from tessera.core.locks import KeyedLocks, Locks
from tessera.model.profile import Profile, new_profile
from tessera.storage.redis.cache import RedisRecordCache
from tessera.storage.redis.locks import RedisLocks
from tests.support.redis_service import new_client, new_wire, redis_space

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LOCK = "p-1"
KEY = "acme\x00p-1"


@dataclass
class World:
    locks: Locks
    # The cache of the records the locks guard, in this process and as another one sees it.
    cache: RecordCachePort[Profile]
    elsewhere: RecordCachePort[Profile]
    # Whether the lock set reads ahead (a shared cache is a round trip away; one in the
    # process is not, and is read as it goes).
    reads_ahead: bool
    # Locks on the same keys with a short time to live (Redis only).
    short_lived: Callable[[float], Locks] | None = None


@asynccontextmanager
async def in_process(_name: str) -> AsyncIterator[World]:
    cache = RecordCache(Profile, max_entries=100, ttl_s=600)
    yield World(KeyedLocks(), cache, cache, reads_ahead=False)


@asynccontextmanager
async def on_redis(name: str) -> AsyncIterator[World]:
    # The scripts run on lean connections, as a server runs them; the other process's too.
    async with redis_space(name) as (client, keys):
        other = new_client()
        wire, other_wire = new_wire(), new_wire()

        def short_lived(ttl_s: float) -> Locks:
            return RedisLocks(client, keys, ttl_s=ttl_s, wire=wire)

        try:
            yield World(
                RedisLocks(client, keys, ttl_s=10.0, wire=wire),
                RedisRecordCache(client, keys, "profile", Profile, ttl_s=600, wire=wire),
                RedisRecordCache(other, keys, "profile", Profile, ttl_s=600, wire=other_wire),
                reads_ahead=True,
                short_lived=short_lived,
            )
        finally:
            await other.aclose()
            await wire.aclose()
            await other_wire.aclose()


WORLDS: dict[str, Callable[[str], AbstractAsyncContextManager[World]]] = {
    "in-process": in_process,
    "redis": on_redis,
}


@pytest.fixture(params=list(WORLDS))
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    async with WORLDS[request.param](request.node.name) as opened:
        yield opened


@pytest.fixture
async def redis_world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    async with on_redis(request.node.name) as opened:
        yield opened


def profile(**traits: object) -> Profile:
    made = new_profile("p-1", "acme", T0)
    made.traits = dict(traits)
    return made


def guarded(world: World) -> list[CacheKeys]:
    return [CacheKeys(world.cache, (KEY,))]


async def test_what_is_read_ahead_is_what_the_cache_held_a_private_copy_each_time(
    world: World,
) -> None:
    await world.elsewhere.put(KEY, profile(visits=1))
    async with world.locks.hold_all([LOCK], guarded(world)) as held:
        found = held.found(world.cache, KEY)
        if not world.reads_ahead:
            assert found is None
            return
        assert found is not None and found.record is not None
        assert found.record.traits == {"visits": 1}
        found.record.traits["visits"] = 2
        again = held.found(world.cache, KEY)
        assert again is not None and again.record is not None
        assert again.record.traits == {"visits": 1}


async def test_a_miss_read_ahead_is_answered_once(world: World) -> None:
    async with world.locks.hold_all([LOCK], guarded(world)) as held:
        first = held.found(world.cache, KEY)
        assert first is None or first.record is None
        if world.reads_ahead:
            assert first is not None, "the miss was read ahead"
        # The caller then reads storage and fills the cache: the next read must find that.
        assert held.found(world.cache, KEY) is None


async def test_a_key_added_without_waiting_reads_its_record_ahead(world: World) -> None:
    await world.elsewhere.put(KEY, profile(visits=3))
    async with world.locks.hold_all(["s-1"]) as held:
        assert held.found(world.cache, KEY) is None
        assert await held.try_add([LOCK], guarded(world))
        found = held.found(world.cache, KEY)
        if world.reads_ahead:
            assert found is not None and found.record is not None
            assert found.record.traits == {"visits": 3}
        else:
            assert found is None


async def test_a_waiter_reads_ahead_what_the_holder_before_it_put_back(world: World) -> None:
    first = world.locks.hold_all([LOCK])
    await first.__aenter__()
    try:
        waiter = asyncio.create_task(_read_after_waiting(world))
        await asyncio.sleep(0.05)
        assert not waiter.done(), "the second holder waits"
        assert await first.still_held(guarded(world))
        first.put_on_release([CachePut(world.cache, KEY, profile(visits=5))])
    finally:
        await first.__aexit__(None, None, None)
    found = await asyncio.wait_for(waiter, timeout=20)
    if world.reads_ahead:
        assert found == {"visits": 5}
    else:
        assert found is None


async def _read_after_waiting(world: World) -> dict[str, object] | None:
    async with world.locks.hold_all(["s-1", LOCK], guarded(world)) as held:
        found = held.found(world.cache, KEY)
        return found.record.traits if found is not None and found.record is not None else None


async def test_checking_before_a_commit_makes_the_entries_misses_for_everyone(
    world: World,
) -> None:
    await world.elsewhere.put(KEY, profile(visits=1))
    async with world.locks.hold_all([LOCK], guarded(world)) as held:
        assert await held.still_held(guarded(world))
        # What was read ahead is forgotten: the commit that follows changes it.
        assert held.found(world.cache, KEY) is None
        assert await world.elsewhere.get(KEY) is None
        # A read of storage that began before cannot fill the old version back.
        await world.elsewhere.fill(KEY, profile(visits=1))
        assert await world.cache.get(KEY) is None


async def test_committed_records_are_put_back_when_letting_go_and_not_before(
    world: World,
) -> None:
    async with world.locks.hold_all([LOCK], guarded(world)) as held:
        assert await held.still_held(guarded(world))
        held.put_on_release([CachePut(world.cache, KEY, profile(visits=2))])
        assert await world.elsewhere.get(KEY) is None
    cached = await world.elsewhere.get(KEY)
    assert cached is not None and cached.traits == {"visits": 2}
    # And the lock is free again.
    async with world.locks.hold_all([]) as other:
        assert await other.try_add([LOCK])


# --- Redis only: a holder that lost its lock ---------------------------------------------------


async def test_a_holder_that_lost_its_locks_neither_discards_nor_puts_back(
    redis_world: World,
) -> None:
    assert redis_world.short_lived is not None
    stalling = redis_world.short_lived(0.2)
    async with stalling.hold_all([LOCK]) as stalled:
        time.sleep(0.5)  # the whole process stalls: no renewal runs, the lock expires
        async with redis_world.locks.hold_all([LOCK]) as taker:
            assert await taker.still_held(guarded(redis_world))
            taker.put_on_release([CachePut(redis_world.cache, KEY, profile(holder="taker"))])
        assert not await stalled.still_held(guarded(redis_world))
        cached = await redis_world.elsewhere.get(KEY)
        assert cached is not None and cached.traits == {"holder": "taker"}, "not discarded"
        stalled.put_on_release([CachePut(redis_world.cache, KEY, profile(holder="stalled"))])
    cached = await redis_world.elsewhere.get(KEY)
    assert cached is not None and cached.traits == {"holder": "taker"}, "not put back"
