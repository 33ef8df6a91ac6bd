"""Per-key locks shared by every API process, on Redis, with expiry, renewal and fencing.

The same interface as ``pipeline/locks.KeyedLocks`` (the ``Locks`` protocol), so ingest, the
profile operations, re-segmentation and delayed steps run unchanged on either.

- A key is taken with one script: only when free, with a random value and an expiry
  (``TESSERA_LOCK_TTL_SECONDS``), so a process that dies holding it frees it within the TTL.
- A live holder renews its keys every third of the TTL (compare-and-expire: only keys still
  holding its value), so a long request does not lose them.
- A holder that stalled longer than the TTL may have lost a key to another process; the caller
  asks ``still_held()`` right before committing and gives up (503) instead of writing.
- Every acquisition takes a number from one counter: its fencing token (``fence(key)``). A later
  holder of a key always has a larger one, so a store that records it can refuse a late write.
  Tokens are never below the time they were taken at (microseconds since the epoch), so they
  go on growing after a switch from the in-process locks (see ``LockSetLike.fence``).
- Release deletes a key only while it still holds this holder's value (compare-and-delete).

Waiting follows ``KeyedLocks``: ``hold_all`` takes its keys in sorted order and waits for each
(polling with a growing pause, since Redis has no waiting lock); ``try_add`` never waits, and
takes all of its keys or none in one script.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any

from redis.asyncio import Redis

from tessera.errors import Busy
from tessera.pipeline.locks import fence_floor
from tessera.storage.redis.client import KeySpace
from tessera.storage.redis.outage import RedisHealth, RedisUnavailable, redis_port

log = logging.getLogger(__name__)

# KEYS: the lock keys, then the fence counter. ARGV: the TTL in ms, the caller's time in
# microseconds since the epoch (pipeline/locks.fence_floor), then one value per lock key.
# All keys are free or none is taken; answers the fencing tokens, or false when one is busy.
# A token is never below the caller's time: the counter jumps up to it when behind (a fresh
# Redis, or one that served an older installation), so tokens keep growing across a switch
# from the in-process locks and can serve as the record store's external versions. Times
# of 2^53 microseconds and more (the year 2255) would lose precision in Lua's numbers.
_TAKE = """
local n = #KEYS - 1
local now = tonumber(ARGV[2])
local fences = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return false end
end
for i = 1, n do
  local fence = redis.call('INCR', KEYS[n + 1])
  if fence < now then
    redis.call('SET', KEYS[n + 1], ARGV[2])
    fence = now
  end
  fences[i] = fence
  redis.call('SET', KEYS[i], ARGV[i + 2], 'PX', ARGV[1])
end
return fences
"""

# KEYS: lock keys; ARGV: the TTL in ms, then one value per key. Extends the keys still holding
# this holder's value; answers how many did.
_RENEW = """
local held = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    held = held + 1
  end
end
return held
"""

# KEYS: lock keys; ARGV: one value per key. Deletes the keys still holding this holder's value.
_RELEASE = """
local released = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('DEL', KEYS[i])
    released = released + 1
  end
end
return released
"""

# Pauses between attempts to take a busy key: short first (most holds last milliseconds).
FIRST_PAUSE_S = 0.002
LONGEST_PAUSE_S = 0.05
# A key busy for longer than this is reported (503) rather than waited for forever: a live
# holder renews without end, so a stuck one would otherwise pile up every request behind it;
# and a key whose holder was cut off from Redis stays taken until its TTL runs out
# (TESSERA_LOCK_WAIT_SECONDS).
DEFAULT_MAX_WAIT_S = 10.0


class RedisLocks:
    def __init__(
        self,
        client: Redis,
        keys: KeySpace,
        *,
        ttl_s: float,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        health: RedisHealth | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("the lock TTL must be positive")
        self._client = client
        self.health = health or RedisHealth()
        self._space = keys
        self._fence_counter = keys.single("lock-fence")
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.renew_every_s = ttl_s / 3
        self.max_wait_s = max_wait_s
        self._take = client.register_script(_TAKE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        # Releases left to finish on their own, so the tasks are not collected meanwhile.
        self._releasing: set[asyncio.Task[None]] = set()

    def hold(self, key: str) -> _RedisHolding:
        return _RedisHolding(RedisLockSet(self, [key]))

    def hold_all(self, keys: Iterable[str]) -> RedisLockSet:
        """Hold several keys: taken in sorted order, so two holders cannot deadlock."""
        return RedisLockSet(self, keys)

    def lock_key(self, key: str) -> str:
        return self._space.key("lock", key)

    @redis_port
    async def take(self, keys: list[str], values: list[str]) -> list[int] | None:
        """Take every key (with its value) or none; their fencing tokens, or None."""
        names = [self.lock_key(key) for key in keys]
        found = await self._take(
            keys=[*names, self._fence_counter], args=[self.ttl_ms, fence_floor(), *values]
        )
        if not found:
            return None
        return [int(fence) for fence in found]

    @redis_port
    async def renew(self, keys: list[str], values: list[str]) -> int:
        names = [self.lock_key(key) for key in keys]
        return int(await self._renew(keys=names, args=[self.ttl_ms, *values]))

    @redis_port
    async def release(self, keys: list[str], values: list[str]) -> int:
        names = [self.lock_key(key) for key in keys]
        return int(await self._release(keys=names, args=values))

    def release_later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="tessera-lock-release")
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)


class RedisLockSet:
    """Keys held together by one holder (see ``pipeline/locks.LockSet`` for the rules)."""

    def __init__(self, owner: RedisLocks, keys: Iterable[str]) -> None:
        self._owner = owner
        self._wanted = sorted(set(keys))
        # Key → (the value this holder wrote, its fencing token), in acquisition order.
        self._held: dict[str, tuple[str, int]] = {}
        self._renewal: asyncio.Task[None] | None = None
        self._done = False

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self._held)

    def fence(self, key: str) -> int | None:
        held = self._held.get(key)
        return held[1] if held is not None else None

    async def __aenter__(self) -> RedisLockSet:
        self._renewal = asyncio.get_running_loop().create_task(
            self._renew_while_held(), name="tessera-lock-renewal"
        )
        try:
            # Uncontended, every key is free: one round trip takes them all.
            if not await self._take_now(self._wanted):
                for key in self._wanted:
                    await self._take_waiting(key)
        except BaseException as error:
            await self._let_go(cut_off=isinstance(error, RedisUnavailable))
            raise
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        await self._let_go(cut_off=isinstance(value, RedisUnavailable))

    async def try_add(self, keys: Iterable[str]) -> bool:
        """Take every key that is free right now, or none of them; never waits."""
        return await self._take_now(sorted(set(keys) - self._held.keys()))

    async def still_held(self) -> bool:
        """Whether every key still holds this holder's value; extends them while at it, so the
        commit that follows has a whole TTL. A Redis that cannot answer is RedisUnavailable:
        nothing may be committed either way."""
        if not self._held:
            return True
        keys = list(self._held)
        renewed = await self._owner.renew(keys, [self._held[key][0] for key in keys])
        return renewed == len(keys)

    async def _take_now(self, keys: list[str]) -> bool:
        if not keys:
            return True
        values = [secrets.token_hex(12) for _ in keys]
        try:
            fences = await self._owner.take(keys, values)
        except BaseException as error:
            # Cancelled (or cut off) after Redis may have run the script: the values are ours
            # alone, so releasing them is safe whether it did or not. Cut off, the release is
            # not waited for: it would most likely wait a whole timeout more for nothing.
            if isinstance(error, RedisUnavailable):
                self._owner.release_later(self._release_quietly(keys, values))
            else:
                await self._release_quietly(keys, values)
            raise
        if fences is None:
            return False
        for key, value, fence in zip(keys, values, fences, strict=True):
            self._held[key] = (value, fence)
        return True

    async def _take_waiting(self, key: str) -> None:
        if key in self._held:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._owner.max_wait_s
        pause = FIRST_PAUSE_S
        while not await self._take_now([key]):
            if loop.time() >= deadline:
                raise Busy("a profile stayed locked too long; retry")
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(pause * 2, LONGEST_PAUSE_S)

    async def _renew_while_held(self) -> None:
        while not self._done:
            await asyncio.sleep(self._owner.renew_every_s)
            if not self._held:
                continue
            keys = list(self._held)
            try:
                renewed = await self._owner.renew(keys, [self._held[key][0] for key in keys])
            except RedisUnavailable as exc:
                # Retried at the next tick; ``still_held`` reports the loss if it comes to that.
                log.warning("could not renew %d lock(s): %s", len(keys), exc)
                continue
            if renewed < len(keys):
                log.warning(
                    "%d of %d lock(s) expired under their holder", len(keys) - renewed, len(keys)
                )

    async def _let_go(self, *, cut_off: bool = False) -> None:
        """Stop renewing and release. ``cut_off`` (this holder failed for want of Redis), or
        Redis failing the last command: the release is left to finish on its own rather than
        waited for; it would most likely make the answer wait a whole timeout more, and the
        keys expire within the TTL anyway if it fails too."""
        # The renewal is stopped, not waited for: a cancellation landing inside a Redis call
        # can be lost (it has been seen to be), and a late renewal is harmless anyway — it only
        # extends keys still holding this holder's value, and release deletes those.
        self._done = True
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            renewal.cancel()
        held, self._held = self._held, {}
        if not held:
            return
        release = self._release_quietly(list(held), [value for value, _fence in held.values()])
        if cut_off or self._owner.health.failing:
            self._owner.release_later(release)
        else:
            await release

    async def _release_quietly(self, keys: list[str], values: list[str]) -> None:
        """Release; when Redis cannot be reached the keys expire on their own within the TTL,
        so the failure is logged rather than hiding the caller's own outcome."""
        try:
            await self._owner.release(keys, values)
        except RedisUnavailable as exc:
            log.warning(
                "could not release %d lock(s); they expire on their own: %s", len(keys), exc
            )


class _RedisHolding:
    """``async with locks.hold(key):`` — one key, nothing answered (as ``KeyedLocks.hold``)."""

    __slots__ = ("_set",)

    def __init__(self, lock_set: RedisLockSet) -> None:
        self._set = lock_set

    async def __aenter__(self) -> None:
        await self._set.__aenter__()

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        await self._set.__aexit__(_type, _value, _traceback)
