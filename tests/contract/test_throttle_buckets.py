"""The token bucket contract (``core/throttle.BucketStore``), run on the in-process buckets
and on the Redis ones every API process shares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tessera.core.throttle import BucketStore, InProcessBuckets
from tessera.storage.redis.outage import RedisHealth
from tessera.storage.redis.throttle import RedisBuckets
from tests.support.redis_service import new_client, redis_space


@pytest.fixture(params=["in-process", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[BucketStore, BucketStore]]:
    """Two stores over the same buckets, as two processes see them (one for in-process)."""
    if request.param == "in-process":
        buckets = InProcessBuckets()
        yield buckets, buckets
        return
    async with redis_space(request.node.name) as (client, keys):
        other = new_client()
        try:
            yield (
                RedisBuckets(client, keys, health=RedisHealth()),
                RedisBuckets(other, keys, health=RedisHealth()),
            )
        finally:
            await other.aclose()


async def test_a_full_bucket_gives_its_tokens_then_says_how_long_to_wait(
    stores: tuple[BucketStore, BucketStore],
) -> None:
    first, second = stores
    # 3 tokens, 10 a second: three at once, then one every 0.1 s, shared by both processes.
    assert [await first.take("ip:a", 3, 10.0) for _ in range(2)] == [0, 0]
    assert await second.take("ip:a", 3, 10.0) == 0
    wait = await first.take("ip:a", 3, 10.0)
    assert 0.05 < wait <= 0.11
    assert await second.take("ip:b", 3, 10.0) == 0  # another client has its own bucket
    await asyncio.sleep(0.15)
    assert await second.take("ip:a", 3, 10.0) == 0
    assert await first.take("ip:a", 3, 10.0) > 0


async def test_an_empty_bucket_refills_to_its_capacity_only(
    stores: tuple[BucketStore, BucketStore],
) -> None:
    first, _second = stores
    for _ in range(2):
        assert await first.take("ip:c", 2, 50.0) == 0
    await asyncio.sleep(0.3)  # 15 tokens' worth of time, but the bucket holds 2
    assert [await first.take("ip:c", 2, 50.0) for _ in range(2)] == [0, 0]
    assert await first.take("ip:c", 2, 50.0) > 0


async def test_in_process_buckets_keep_a_bounded_number_of_clients() -> None:
    buckets = InProcessBuckets(max_keys=100)
    for index in range(1000):
        await buckets.take(f"ip:{index}", 1, 1.0)
    assert len(buckets) == 100
