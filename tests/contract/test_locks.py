"""The lock service contract (``core/locks.Locks``), run on the in-process ``KeyedLocks``
and on ``RedisLocks``.

"Two processes" are two ``RedisLocks`` on two separate Redis connections (for the in-process
service, one instance stands for both: it can only ever serve one process). What only a
distributed lock has — expiry of a dead holder, renewal of a live one, a stalled holder
learning it lost its lock — runs on Redis alone, the dead holder being a real process killed
with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tessera.core.locks import KeyedLocks, Locks
from tessera.errors import StorageUnavailable
from tessera.storage.redis.client import KeySpace
from tessera.storage.redis.locks import RedisLocks
from tests.support.redis_service import (
    REDIS_HOST,
    REDIS_PORT,
    new_client,
    new_wire,
    redis_space,
)

# Generous guards against a hang (a deadlock would otherwise stall the run); never a measure.
GUARD_S = 20.0


@dataclass
class LockWorld:
    first: Locks
    second: Locks
    # Lock keys still taken in the service (not counting fencing counters).
    leftover: Callable[[], Awaitable[int]]
    # A new instance as a restarted process gets it (the in-process one starts from nothing).
    restart: Callable[[], Locks]
    # For the Redis-only tests: a third instance with other settings, on the same keys.
    make: Callable[..., Locks] | None = None
    keys: KeySpace | None = None


LocksOpener = Callable[[str], AbstractAsyncContextManager[LockWorld]]


@asynccontextmanager
async def in_process_locks(_name: str) -> AsyncIterator[LockWorld]:
    locks = KeyedLocks()

    async def leftover() -> int:
        return len(locks)

    yield LockWorld(locks, locks, leftover, KeyedLocks)


@asynccontextmanager
async def redis_locks(name: str) -> AsyncIterator[LockWorld]:
    # Each "process" runs its scripts on a lean connection of its own, as a server does.
    async with redis_space(name) as (client, keys):
        other = new_client()
        wire, other_wire = new_wire(), new_wire()

        def make(ttl_s: float = 10.0, max_wait_s: float = 30.0) -> RedisLocks:
            return RedisLocks(other, keys, ttl_s=ttl_s, max_wait_s=max_wait_s, wire=other_wire)

        async def leftover() -> int:
            return len([k async for k in client.scan_iter(match=f"{keys.prefix}:lock:*")])

        try:
            first = RedisLocks(client, keys, ttl_s=10.0, wire=wire)
            yield LockWorld(first, make(), leftover, make, make=make, keys=keys)
        finally:
            await other.aclose()
            await wire.aclose()
            await other_wire.aclose()


LOCK_SERVICES: dict[str, LocksOpener] = {"in-process": in_process_locks, "redis": redis_locks}


@pytest.fixture(params=list(LOCK_SERVICES))
async def world(request: pytest.FixtureRequest) -> AsyncIterator[LockWorld]:
    async with LOCK_SERVICES[request.param](request.node.name) as opened:
        yield opened


@pytest.fixture
async def redis_world(request: pytest.FixtureRequest) -> AsyncIterator[LockWorld]:
    async with redis_locks(request.node.name) as opened:
        yield opened


async def guarded(awaitable: Awaitable[object]) -> None:
    await asyncio.wait_for(awaitable, timeout=GUARD_S)


# --- Both services ----------------------------------------------------------------------------


async def test_one_holder_at_a_time_across_two_instances(world: LockWorld) -> None:
    inside: list[int] = []
    overlaps = 0
    done = 0

    async def work(index: int) -> None:
        nonlocal overlaps, done
        locks = world.first if index % 2 else world.second
        async with locks.hold("profile-1"):
            if inside:
                overlaps += 1
            inside.append(index)
            await asyncio.sleep(0.001)
            inside.remove(index)
            done += 1

    await guarded(asyncio.gather(*(work(i) for i in range(30))))
    assert (overlaps, done) == (0, 30)
    assert await world.leftover() == 0


async def test_other_keys_are_not_blocked(world: LockWorld) -> None:
    async with world.first.hold("a"), asyncio.timeout(GUARD_S), world.second.hold("b"):
        assert await world.leftover() == 2
    assert await world.leftover() == 0


async def test_a_failing_holder_lets_go(world: LockWorld) -> None:
    with pytest.raises(RuntimeError):
        async with world.first.hold_all(["k", "j"]):
            raise RuntimeError("boom")
    assert await world.leftover() == 0
    async with world.second.hold_all([]) as held:
        assert await held.try_add(["k", "j"]) is True


async def test_try_add_never_waits_and_takes_all_or_nothing(world: LockWorld) -> None:
    async with world.first.hold_all(["x"]) as theirs, world.second.hold_all(["y"]) as ours:
        # x is busy: neither x nor the free z is taken, and the answer comes at once.
        assert await asyncio.wait_for(ours.try_add(["x", "z"]), GUARD_S) is False
        assert ours.keys == frozenset({"y"})
        assert await theirs.try_add(["z"]) is True
        assert await ours.try_add(["z"]) is False
        # Keys already held are no obstacle.
        assert await ours.try_add(["y"]) is True
    async with world.second.hold_all(["y"]) as ours:
        assert await ours.try_add(["x", "y", "z"]) is True
        assert ours.keys == frozenset({"x", "y", "z"})
        assert await ours.still_held() is True
    assert await world.leftover() == 0


async def test_fencing_tokens_grow_with_every_acquisition(world: LockWorld) -> None:
    fences: list[int] = []
    for round_ in range(6):
        locks = world.first if round_ % 2 else world.second
        async with locks.hold_all(["k", "other"]) as held:
            fence = held.fence("k")
            assert fence is not None
            fences.append(fence)
            assert held.fence("never-taken") is None
            assert await held.try_add(["added"]) is True
            added = held.fence("added")
            assert added is not None and added > fence
    assert fences == sorted(fences)
    assert len(set(fences)) == len(fences)


async def _fence_of(locks: Locks, key: str = "k") -> int:
    async with locks.hold_all([key]) as held:
        fence = held.fence(key)
    assert fence is not None
    return fence


def _now_us() -> int:
    return time.time_ns() // 1000


async def test_fencing_tokens_are_never_below_the_time_they_were_taken_at(
    world: LockWorld,
) -> None:
    # Tokens serve as Elasticsearch's external versions: a later process, or the other kind
    # of lock service, must start above every token before it; the time is the common floor.
    for locks in (world.first, world.second, world.restart()):
        before = _now_us()
        fence = await _fence_of(locks)
        assert fence >= before
        async with locks.hold_all([]) as held:
            before = _now_us()
            assert await held.try_add(["added"]) is True
            added = held.fence("added")
            assert added is not None and added >= before


async def test_fencing_tokens_keep_growing_across_a_restart(world: LockWorld) -> None:
    fences = [await _fence_of(world.first), await _fence_of(world.second)]
    for _restart in range(3):
        restarted = world.restart()
        fences += [await _fence_of(restarted, key) for key in ("k", "other", "k")]
    assert fences == sorted(fences)
    assert len(set(fences)) == len(fences)


async def test_fencing_tokens_keep_growing_across_a_switch_of_lock_service(
    redis_world: LockWorld,
) -> None:
    # The same installation run first with in-process locks, then with Redis, then without.
    fences = [await _fence_of(KeyedLocks())]
    fences.append(await _fence_of(redis_world.first))
    fences.append(await _fence_of(KeyedLocks()))
    fences.append(await _fence_of(redis_world.restart()))
    assert fences == sorted(fences)
    assert len(set(fences)) == len(fences)


async def test_a_redis_fence_counter_behind_the_clock_jumps_to_it_and_never_goes_back(
    redis_world: LockWorld,
) -> None:
    assert redis_world.keys is not None
    counter = redis_world.keys.single("lock-fence")
    client = new_client()
    try:
        # An installation whose counter counted from 1 before tokens became versions.
        await client.set(counter, 41)
        before = _now_us()
        jumped = await _fence_of(redis_world.first)
        assert jumped >= before
        stored = await client.get(counter)
        assert stored is not None and int(stored) == jumped
        # A counter ahead of this clock (another host's clock is ahead, or this one stepped
        # back): tokens go on from the counter, never back to the clock.
        ahead = _now_us() + 3_600_000_000
        await client.set(counter, ahead)
        assert await _fence_of(redis_world.second) == ahead + 1
        async with redis_world.first.hold_all(["a", "b"]) as held:
            assert (held.fence("a"), held.fence("b")) == (ahead + 2, ahead + 3)
    finally:
        await client.aclose()


async def test_overlapping_sets_in_sorted_order_never_deadlock(world: LockWorld) -> None:
    names = [f"key-{i}" for i in range(6)]
    rng = random.Random(5)
    sets = [rng.sample(names, 3) for _ in range(24)]
    holders: dict[str, int] = {}
    clashes = 0
    finished = 0

    async def work(index: int, keys: list[str]) -> None:
        nonlocal clashes, finished
        locks = world.first if index % 2 else world.second
        async with locks.hold_all(reversed(keys)) as held:
            assert held.keys == frozenset(keys)
            clashes += sum(1 for key in keys if key in holders)
            holders.update(dict.fromkeys(keys, index))
            await asyncio.sleep(0.001)
            for key in keys:
                del holders[key]
            finished += 1

    await guarded(asyncio.gather(*(work(i, keys) for i, keys in enumerate(sets))))
    assert (clashes, finished) == (0, len(sets))
    assert await world.leftover() == 0


async def test_a_cancelled_waiter_leaves_no_lock_behind(world: LockWorld) -> None:
    async def take() -> None:
        async with world.second.hold("k"):
            return

    async with world.first.hold("k"):
        waiter = asyncio.create_task(take())
        await asyncio.sleep(0.02)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert await world.leftover() == 0
    async with world.first.hold_all([]) as held:
        assert await held.try_add(["k"]) is True


# --- Redis only: what a lock shared between processes must also do ----------------------------


async def test_renewal_keeps_a_live_holders_lock(redis_world: LockWorld) -> None:
    assert redis_world.make is not None
    short = redis_world.make(ttl_s=0.3)
    async with short.hold_all(["k"]) as held:
        await asyncio.sleep(1.2)  # four TTLs: without renewal the key would be long gone
        async with redis_world.first.hold_all([]) as other:
            assert await other.try_add(["k"]) is False
        assert await held.still_held() is True


async def test_a_stalled_holder_loses_its_lock_and_knows_it(redis_world: LockWorld) -> None:
    assert redis_world.make is not None
    short = redis_world.make(ttl_s=0.2)
    async with short.hold_all(["k"]) as stalled:
        first_fence = stalled.fence("k")
        time.sleep(0.5)  # the whole process stalls (no renewal runs), as in a long GC pause
        async with redis_world.first.hold_all([]) as taker:
            assert await taker.try_add(["k"]) is True
            assert await stalled.still_held() is False
            taker_fence = taker.fence("k")
            assert first_fence is not None and taker_fence is not None
            assert taker_fence > first_fence
    assert await redis_world.leftover() == 0


async def test_a_stalled_holders_exit_does_not_free_the_new_holders_lock(
    redis_world: LockWorld,
) -> None:
    assert redis_world.make is not None
    short = redis_world.make(ttl_s=0.2)
    taker = redis_world.first.hold_all([])
    async with short.hold_all(["k"]):
        time.sleep(0.5)
        held = await taker.__aenter__()
        assert await held.try_add(["k"]) is True
    try:
        assert await held.still_held() is True
        async with redis_world.second.hold_all([]) as third:
            assert await third.try_add(["k"]) is False
    finally:
        await taker.__aexit__(None, None, None)


async def test_waiting_for_a_key_held_too_long_answers_unavailable(
    redis_world: LockWorld,
) -> None:
    assert redis_world.make is not None
    impatient = redis_world.make(max_wait_s=0.1)
    async with redis_world.first.hold("k"):
        with pytest.raises(StorageUnavailable):
            async with impatient.hold("k"):
                pass
    assert await redis_world.leftover() == 0


HOLDER = """
import asyncio, sys
from redis.asyncio import Redis
from tessera.storage.redis.client import KeySpace
from tessera.storage.redis.locks import RedisLocks

async def main() -> None:
    host, port, prefix, key, ttl = sys.argv[1:6]
    locks = RedisLocks(Redis(host=host, port=int(port)), KeySpace(prefix), ttl_s=float(ttl))
    async with locks.hold(key):
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_dead_processs_lock_expires_and_a_live_ones_does_not(
    redis_world: LockWorld,
) -> None:
    assert redis_world.keys is not None
    ttl = 0.4
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        REDIS_HOST,
        str(REDIS_PORT),
        redis_world.keys.prefix,
        "k",
        str(ttl),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), GUARD_S)
        assert line.strip() == b"held"
        # Alive, the other process renews: three TTLs later the key is still its own.
        await asyncio.sleep(3 * ttl)
        async with redis_world.first.hold_all([]) as ours:
            assert await ours.try_add(["k"]) is False
        os.kill(holder.pid, signal.SIGKILL)
        await holder.wait()
        # Dead, it renews no more: a waiting holder gets the key once the TTL runs out.
        async with asyncio.timeout(GUARD_S), redis_world.first.hold_all(["k"]) as ours:
            assert ours.keys == frozenset({"k"})
            assert await ours.still_held() is True
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
