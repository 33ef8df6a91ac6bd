"""The token bucket contract (``core/throttle.BucketStore``), run on the in-process buckets
and on the Redis ones every API process shares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from tessera.core.clock import ManualClock
from tessera.core.throttle import BucketStore, InProcessBuckets
from tessera.storage.redis.outage import RedisHealth
from tessera.storage.redis.throttle import RedisBuckets
from tests.support.redis_service import new_client, redis_space


@dataclass
class Buckets:
    """Two stores over the same buckets, as two processes see them (one for in-process), and
    how time passes for them: the in-process clock is moved on (no sleep, no margin); Redis
    refills by its own clock, so there time really passes."""

    first: BucketStore
    second: BucketStore
    pass_time: Callable[[float], Awaitable[None]] = asyncio.sleep


@pytest.fixture(params=["in-process", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Buckets]:
    if request.param == "in-process":
        clock = ManualClock()
        buckets = InProcessBuckets(clock=clock)

        async def pass_time(seconds: float) -> None:
            clock.advance(seconds)

        yield Buckets(buckets, buckets, pass_time)
        return
    async with redis_space(request.node.name) as (client, keys):
        other = new_client()
        try:
            yield Buckets(
                RedisBuckets(client, keys, health=RedisHealth()),
                RedisBuckets(other, keys, health=RedisHealth()),
            )
        finally:
            await other.aclose()


async def test_a_full_bucket_gives_its_tokens_then_says_how_long_to_wait(
    stores: Buckets,
) -> None:
    first, second = stores.first, stores.second
    # 3 tokens, 10 a second: three at once, then one every 0.1 s, shared by both processes.
    assert [await first.take("ip:a", 3, 10.0) for _ in range(2)] == [0, 0]
    assert await second.take("ip:a", 3, 10.0) == 0
    wait = await first.take("ip:a", 3, 10.0)
    assert 0.05 < wait <= 0.11
    assert await second.take("ip:b", 3, 10.0) == 0  # another client has its own bucket
    await stores.pass_time(0.15)
    assert await second.take("ip:a", 3, 10.0) == 0
    assert await first.take("ip:a", 3, 10.0) > 0


async def test_an_empty_bucket_refills_to_its_capacity_only(stores: Buckets) -> None:
    first = stores.first
    for _ in range(2):
        assert await first.take("ip:c", 2, 50.0) == 0
    await stores.pass_time(0.3)  # 15 tokens' worth of time, but the bucket holds 2
    assert [await first.take("ip:c", 2, 50.0) for _ in range(2)] == [0, 0]
    assert await first.take("ip:c", 2, 50.0) > 0


async def test_in_process_buckets_keep_a_bounded_number_of_clients() -> None:
    buckets = InProcessBuckets(max_keys=100)
    for index in range(1000):
        await buckets.take(f"ip:{index}", 1, 1.0)
    assert len(buckets) == 100
