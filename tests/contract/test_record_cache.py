"""The record cache contract (``core/cache.RecordCachePort``), run on the in-process
``RecordCache`` and on ``RedisRecordCache``.

"Two processes" are two caches on two Redis connections over the same keys; the in-process
cache stands for both with one instance (it can only serve one process).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tessera.core.cache import RecordCache, RecordCachePort
from tessera.core.clock import ManualClock
from tessera.model.profile import Profile, new_profile
from tessera.storage.redis.cache import RedisRecordCache
from tests.support.redis_service import new_client, new_wire, redis_space

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
# TESSERA_CACHE_MAX_ENTRY_BYTES of the caches under test.
ENTRY_BYTES = 8192


@dataclass
class CachePair:
    first: RecordCachePort[Profile]
    second: RecordCachePort[Profile]
    # Lets time pass for the entries' time to live: the in-process cache's clock is moved on
    # (no sleep, no margin); Redis keeps the TTLs on its own clock, so there time really passes.
    pass_time: Callable[[float], Awaitable[None]] = asyncio.sleep


CacheOpener = Callable[[str, float], AbstractAsyncContextManager[CachePair]]


@asynccontextmanager
async def in_process_cache(_name: str, ttl_s: float) -> AsyncIterator[CachePair]:
    clock = ManualClock()
    cache = RecordCache(
        Profile, max_entries=1000, ttl_s=ttl_s, max_entry_bytes=ENTRY_BYTES, clock=clock
    )

    async def pass_time(seconds: float) -> None:
        clock.advance(seconds)

    yield CachePair(cache, cache, pass_time)


@asynccontextmanager
async def redis_cache(name: str, ttl_s: float) -> AsyncIterator[CachePair]:
    # The first reads through a lean connection (as a server does), the second through
    # redis-py alone: both ways of reading meet the same entries.
    async with redis_space(name) as (client, keys):
        other = new_client()
        wire = new_wire()
        try:
            yield CachePair(
                RedisRecordCache(
                    client,
                    keys,
                    "profile",
                    Profile,
                    ttl_s=ttl_s,
                    max_entry_bytes=ENTRY_BYTES,
                    wire=wire,
                ),
                RedisRecordCache(
                    other, keys, "profile", Profile, ttl_s=ttl_s, max_entry_bytes=ENTRY_BYTES
                ),
            )
        finally:
            await other.aclose()
            await wire.aclose()


CACHES: dict[str, CacheOpener] = {"in-process": in_process_cache, "redis": redis_cache}


# Opens the parametrised cache pair with a time to live, under the test's own key space.
TtlOpener = Callable[[float], AbstractAsyncContextManager[CachePair]]


@pytest.fixture(params=list(CACHES))
def open_cache(request: pytest.FixtureRequest) -> TtlOpener:
    opener = CACHES[request.param]
    name = request.node.name

    def with_ttl(ttl_s: float) -> AbstractAsyncContextManager[CachePair]:
        return opener(name, ttl_s)

    return with_ttl


@pytest.fixture
async def caches(open_cache: TtlOpener) -> AsyncIterator[CachePair]:
    async with open_cache(600) as pair:
        yield pair


def profile(profile_id: str, **traits: object) -> Profile:
    made = new_profile(profile_id, "acme", T0)
    made.traits = dict(traits)
    return made


async def test_what_one_process_puts_the_other_gets(caches: CachePair) -> None:
    await caches.first.put("acme\x00p1", profile("p1", tier="gold"))
    got = await caches.second.get("acme\x00p1")
    assert got == profile("p1", tier="gold")
    assert await caches.second.get("acme\x00p2") is None
    assert await caches.second.get("other\x00p1") is None


async def test_every_read_is_a_private_copy(caches: CachePair) -> None:
    await caches.first.put("k", profile("p1", tier="gold"))
    mine = await caches.first.get("k")
    assert mine is not None
    mine.traits["tier"] = "changed by a request that did not commit"
    again = await caches.second.get("k")
    assert again is not None and again.traits == {"tier": "gold"}


async def test_put_overwrites_and_fill_only_fills_an_empty_key(caches: CachePair) -> None:
    await caches.first.fill("k", profile("p1", version=1))
    await caches.second.fill("k", profile("p1", version=0))  # a slower, older read
    got = await caches.first.get("k")
    assert got is not None and got.traits == {"version": 1}
    await caches.second.put("k", profile("p1", version=2))  # a commit
    await caches.first.fill("k", profile("p1", version=1))  # a read that raced it
    got = await caches.first.get("k")
    assert got is not None and got.traits == {"version": 2}


async def test_a_discarded_record_is_gone_and_a_racing_read_cannot_bring_it_back(
    caches: CachePair,
) -> None:
    await caches.first.put("k", profile("p1", version=1))
    await caches.second.discard("k")  # e.g. p1 was merged into another profile
    assert await caches.first.get("k") is None
    # A read of storage that began before the merge now tries to keep what it read.
    await caches.first.fill("k", profile("p1", version=1))
    assert await caches.first.get("k") is None
    assert await caches.second.get("k") is None
    # The next commit's put is kept again.
    await caches.first.put("k", profile("p1", version=2))
    got = await caches.second.get("k")
    assert got is not None and got.traits == {"version": 2}
    # Discarding what is not there is harmless.
    await caches.first.discard("never-cached")
    assert await caches.first.get("never-cached") is None


async def test_a_cache_with_no_time_to_live_keeps_nothing(
    open_cache: TtlOpener,
) -> None:
    async with open_cache(0) as off:
        await off.first.put("k", profile("p1"))
        await off.first.fill("j", profile("p2"))
        assert await off.second.get("k") is None
        assert await off.second.get("j") is None


async def test_entries_expire_unless_used(
    open_cache: TtlOpener,
) -> None:
    async with open_cache(0.5) as short:
        await short.first.put("used", profile("p1"))
        await short.first.put("unused", profile("p2"))
        await short.pass_time(0.3)
        assert await short.second.get("used") is not None  # a hit extends its life
        await short.pass_time(0.3)
        assert await short.second.get("used") is not None
        assert await short.second.get("unused") is None
        await short.pass_time(0.7)
        assert await short.first.get("used") is None


async def test_a_record_larger_than_the_entry_bound_is_never_kept(caches: CachePair) -> None:
    """TESSERA_CACHE_MAX_ENTRY_BYTES: a large profile is read from storage each time, and its
    smaller version cached before does not stay behind as a stale copy."""
    await caches.first.put("p1", profile("p1", plan="small"))
    grown = profile("p1", blob="x" * ENTRY_BYTES)
    await caches.first.put("p1", grown)
    assert await caches.second.get("p1") is None
    await caches.second.fill("p1", profile("p1", plan="small"))  # a racing read: not kept
    assert await caches.first.get("p1") is None
    await caches.first.fill("p2", profile("p2", blob="y" * ENTRY_BYTES))
    assert await caches.second.get("p2") is None
