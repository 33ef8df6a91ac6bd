"""The DedupKeys contract on the in-process store and on Redis: the first claim wins, for a
while, across two processes (two Redis connections) as within one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import pytest

from tessera.storage.dedup import DedupKeys, InProcessDedupKeys
from tessera.storage.redis.dedup import RedisDedupKeys
from tests.support.redis_service import new_client, redis_space


@dataclass
class DedupPair:
    first: DedupKeys
    second: DedupKeys


DedupOpener = Callable[[str], AbstractAsyncContextManager[DedupPair]]


@asynccontextmanager
async def in_process_dedup(_name: str) -> AsyncIterator[DedupPair]:
    keys = InProcessDedupKeys()
    yield DedupPair(keys, keys)


@asynccontextmanager
async def redis_dedup(name: str) -> AsyncIterator[DedupPair]:
    async with redis_space(name) as (client, keys):
        other = new_client()
        try:
            yield DedupPair(RedisDedupKeys(client, keys), RedisDedupKeys(other, keys))
        finally:
            await other.aclose()


DEDUP_STORES: dict[str, DedupOpener] = {"in-process": in_process_dedup, "redis": redis_dedup}


@pytest.fixture(params=list(DEDUP_STORES))
async def dedup(request: pytest.FixtureRequest) -> AsyncIterator[DedupPair]:
    async with DEDUP_STORES[request.param](request.node.name) as pair:
        yield pair


async def test_only_the_first_claim_wins(dedup: DedupPair) -> None:
    assert await dedup.first.claim("acme", "event-1", 60) is True
    assert await dedup.second.claim("acme", "event-1", 60) is False
    assert await dedup.first.claim("acme", "event-1", 60) is False
    assert await dedup.second.claim("acme", "event-2", 60) is True


async def test_tenants_and_keys_are_separate(dedup: DedupPair) -> None:
    assert await dedup.first.claim("acme", "k", 60) is True
    assert await dedup.first.claim("globex", "k", 60) is True
    assert await dedup.first.claim("acme", "K", 60) is True
    # A tenant and key that would read the same when joined naively stay distinct.
    assert await dedup.first.claim("acme:x", "y", 60) is True
    assert await dedup.first.claim("acme", "x:y", 60) is True


async def test_of_many_concurrent_claims_exactly_one_wins(dedup: DedupPair) -> None:
    claims = [
        (dedup.first if i % 2 else dedup.second).claim("acme", "delivery-7", 60) for i in range(40)
    ]
    results = await asyncio.gather(*claims)
    assert results.count(True) == 1


async def test_a_claim_is_forgotten_after_its_time_to_live(dedup: DedupPair) -> None:
    assert await dedup.first.claim("acme", "short", 0.2) is True
    assert await dedup.first.claim("acme", "long", 60) is True
    await asyncio.sleep(0.35)
    assert await dedup.second.claim("acme", "short", 0.2) is True
    assert await dedup.second.claim("acme", "long", 60) is False


async def test_the_in_process_store_forgets_expired_claims() -> None:
    keys = InProcessDedupKeys()
    for i in range(50):
        await keys.claim("acme", f"k{i}", 0.05)
    await asyncio.sleep(0.1)
    await keys.claim("acme", "fresh", 60)
    assert len(keys) == 1
