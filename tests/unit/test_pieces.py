"""Small pure pieces: event type names, depth checks, the cache, per-key locks."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tessera.collect.payload import check_depth
from tessera.core.cache import TtlCache
from tessera.core.clock import ManualClock
from tessera.core.locks import KeyedLocks
from tessera.errors import InvalidPayload
from tessera.model.common import new_id
from tessera.model.event import normalise_event_type


def test_new_ids_are_distinct_time_ordered_uuids() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    assert all(uuid.UUID(value).version == 7 for value in ids[:500])
    # Ordered by their millisecond prefix, so indexes keyed by them grow at the end.
    prefixes = [value[:13] for value in ids]
    assert prefixes == sorted(prefixes)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Page View", "page-view"),
        ("  Add   To Cart ", "add-to-cart"),
        ("purchase", "purchase"),
        ("SIGN-UP", "sign-up"),
        ("   ", ""),
    ],
)
def test_event_types_are_normalised_as_tracardi_does(raw: str, expected: str) -> None:
    assert normalise_event_type(raw) == expected


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = {"a": [value]} if depth % 2 else {"a": value}
    return value


def test_depth_limit_counts_levels() -> None:
    check_depth({"a": {"b": {"c": 1}}}, 3, "x")
    with pytest.raises(InvalidPayload, match=r"x: nested deeper than 2"):
        check_depth({"a": {"b": {"c": 1}}}, 2, "x")
    check_depth([[], {}, 1, "s"], 2, "y")


def test_depth_check_survives_very_deep_input() -> None:
    value: object = 1
    for _ in range(100_000):
        value = [value]
    with pytest.raises(InvalidPayload):
        check_depth(value, 32, "deep")


def test_cache_evicts_least_recently_used() -> None:
    cache = TtlCache[int](max_entries=2, ttl_s=60)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2


def test_cache_entries_expire() -> None:
    clock = ManualClock()
    cache = TtlCache[str](max_entries=10, ttl_s=5, clock=clock)
    cache.put("k", "v")
    clock.advance(4)
    assert cache.get("k") == "v"  # a hit extends the entry's life
    clock.advance(4)
    assert cache.get("k") == "v"
    clock.advance(6)
    assert cache.get("k") is None


def test_cache_switched_off_keeps_nothing() -> None:
    cache = TtlCache[int](max_entries=10, ttl_s=0)
    cache.put("a", 1)
    assert cache.get("a") is None


async def test_keyed_locks_serialise_one_key_and_clean_up() -> None:
    locks = KeyedLocks()
    inside: list[int] = []
    overlaps = 0

    async def work(index: int) -> None:
        nonlocal overlaps
        async with locks.hold("profile-1"):
            if inside:
                overlaps += 1
            inside.append(index)
            await asyncio.sleep(0)
            inside.remove(index)

    await asyncio.gather(*(work(i) for i in range(50)))
    assert overlaps == 0
    assert len(locks) == 0


async def test_keyed_locks_do_not_block_other_keys() -> None:
    locks = KeyedLocks()
    async with locks.hold("a"):
        await asyncio.wait_for(_take(locks, "b"), timeout=5)


async def test_keyed_lock_is_released_when_the_holder_fails() -> None:
    locks = KeyedLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("k"):
            raise RuntimeError("boom")
    assert len(locks) == 0
    await asyncio.wait_for(_take(locks, "k"), timeout=5)


async def test_cancelled_waiter_leaves_no_lock_behind() -> None:
    locks = KeyedLocks()
    async with locks.hold("k"):
        waiter = asyncio.create_task(_take(locks, "k"))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert len(locks) == 0


async def _take(locks: KeyedLocks, key: str) -> None:
    async with locks.hold(key):
        return
