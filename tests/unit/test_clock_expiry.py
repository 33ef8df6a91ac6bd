"""In-process expiry read from an injected clock (core/clock.py): exact at the boundary, with
no sleep and no margin."""

from __future__ import annotations

import pytest

from tessera.core.cache import TtlCache
from tessera.core.clock import ManualClock
from tessera.core.loading_cache import LoadingCache
from tessera.core.throttle import InProcessBuckets


def test_a_cache_entry_lives_its_time_to_live_and_a_hit_extends_it() -> None:
    clock = ManualClock()
    cache = TtlCache[str](max_entries=10, ttl_s=5.0, clock=clock)
    cache.put("used", "a")
    cache.put("unused", "b")
    clock.advance(5.0)  # the last instant of both
    assert cache.get("used") == "a"  # and its life starts again
    clock.advance(0.001)
    assert cache.get("unused") is None
    clock.advance(4.999)
    assert cache.get("used") == "a"
    clock.advance(5.001)
    assert cache.get("used") is None
    assert len(cache) == 0


async def test_a_loading_cache_loads_again_only_after_its_time_to_live() -> None:
    clock = ManualClock()
    loads: list[str] = []

    async def load(key: str) -> str:
        loads.append(key)
        return f"{key}-{len(loads)}"

    cache = LoadingCache(load, ttl_s=30.0, clock=clock)
    assert await cache.get("rules") == "rules-1"
    clock.advance(29.999)
    assert await cache.get("rules") == "rules-1"
    expires, _value = await cache.entry("rules")
    assert expires == clock.monotonic() + 0.001
    clock.advance(0.002)
    assert await cache.get("rules") == "rules-2"
    assert loads == ["rules", "rules"]


async def test_a_bucket_refills_by_the_clock() -> None:
    clock = ManualClock()
    buckets = InProcessBuckets(clock=clock)
    assert [await buckets.take("ip", 2, 4.0) for _ in range(2)] == [0.0, 0.0]
    assert await buckets.take("ip", 2, 4.0) == pytest.approx(0.25)
    clock.advance(0.25)  # exactly one token at 4 a second
    assert await buckets.take("ip", 2, 4.0) == 0.0
    assert await buckets.take("ip", 2, 4.0) == pytest.approx(0.25)


def test_a_manual_clock_never_goes_backwards() -> None:
    clock = ManualClock(start=10.0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1.0)
    assert clock.monotonic() == 10.0
