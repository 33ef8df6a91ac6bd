"""Per-key locks shared by every API process, on Redis, with expiry, renewal and fencing.

The same interface as ``core/locks.KeyedLocks`` (the ``Locks`` protocol), so ingest, the
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

The cache work on the records the keys guard rides in the same scripts (``LockSetLike``), so
that a request makes three round trips where it made eleven: taking its keys reads its
session and profile from the shared cache (``storage/redis/cache.py``); the check before the
commit leaves the tombstones that make them misses; letting go puts the committed versions
back first. Each script touches several keys, so a single Redis server (or a primary with
replicas) is needed, not Redis Cluster.

Waiting follows ``KeyedLocks``: ``hold_all`` takes its keys in sorted order and waits for each
(polling with a growing pause, since Redis has no waiting lock); ``try_add`` never waits, and
takes all of its keys or none in one script.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import msgspec
from redis.asyncio import Redis

from tessera.core.backoff import backoff_delay
from tessera.core.cache import CacheKeys, CachePut, Found, RecordCachePort
from tessera.core.locks import fence_floor
from tessera.errors import Busy, StorageUnavailable
from tessera.storage.redis.cache import RedisRecordCache
from tessera.storage.redis.client import KeySpace
from tessera.storage.redis.outage import RedisHealth, RedisUnavailable, redis_port
from tessera.storage.redis.wire import RedisWire

log = logging.getLogger(__name__)

R = TypeVar("R", bound=msgspec.Struct)

# KEYS: the lock keys, the fence counter, then cache entries to read. ARGV: the number of lock
# keys, the TTL in ms, the caller's time in microseconds since the epoch
# (core/locks.fence_floor), one value per lock key, then each cache entry's life in ms.
# All lock keys are free or none is taken; answers false when one is busy, else the fencing
# tokens and the cache entries (false for a miss or a tombstone; a hit's life starts again,
# as storage/redis/cache.py's reads do). Read after the locks are taken, in the same script,
# so what is read is what the lock's previous holder left.
# A token is never below the caller's time: the counter jumps up to it when behind (a fresh
# Redis, or one that served an older installation), so tokens keep growing across a switch
# from the in-process locks and can serve as the record store's external versions. Times
# of 2^53 microseconds and more (the year 2255) would lose precision in Lua's numbers.
_TAKE = """
local n = tonumber(ARGV[1])
local now = tonumber(ARGV[3])
local fences = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return false end
end
for i = 1, n do
  local fence = redis.call('INCR', KEYS[n + 1])
  if fence < now then
    redis.call('SET', KEYS[n + 1], ARGV[3])
    fence = now
  end
  fences[i] = fence
  redis.call('SET', KEYS[i], ARGV[i + 3], 'PX', ARGV[2])
end
local found = {}
for j = n + 2, #KEYS do
  local value = redis.call('GET', KEYS[j])
  if value and value ~= '' then
    redis.call('PEXPIRE', KEYS[j], ARGV[j + 2])
    found[j - n - 1] = value
  else
    found[j - n - 1] = false
  end
end
return {fences, found}
"""

# Renewing, and before a commit checking. KEYS: the lock keys, then cache entries to make
# misses. ARGV: the number of lock keys, the TTL in ms, one value per lock key, then each
# tombstone's life in ms. Extends the lock keys still holding this holder's value, and when
# every one does, writes a tombstone in each cache entry (see storage/redis/cache.py,
# ``discard``); answers how many lock keys were held.
_CHECK = """
local n = tonumber(ARGV[1])
local held = 0
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[i + 2] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    held = held + 1
  end
end
if held == n then
  for j = n + 1, #KEYS do
    redis.call('SET', KEYS[j], '', 'PX', ARGV[j + 2])
  end
end
return held
"""

# Letting go. KEYS: the lock keys, then cache entries to put back. ARGV: the number of lock
# keys, one value per lock key, then each entry's value and life in ms. The entries are
# written only while every lock key is still this holder's (a holder that lost a lock leaves
# the misses it made rather than overwrite a later holder's records); then the keys still
# holding this holder's value are deleted (compare-and-delete). Answers how many were.
_LET_GO = """
local n = tonumber(ARGV[1])
local held = 0
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then held = held + 1 end
end
if held == n then
  for j = n + 1, #KEYS do
    local at = 2 * j - n
    redis.call('SET', KEYS[j], ARGV[at], 'PX', ARGV[at + 1])
  end
end
local released = 0
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
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
        wire: RedisWire | None = None,
    ) -> None:
        """``wire``: the lean connection on ``client``'s server the scripts run through (the
        hot path's three round trips); without one they run through ``client``."""
        if ttl_s <= 0:
            raise ValueError("the lock TTL must be positive")
        self._client = client
        self.health = health or RedisHealth()
        self._space = keys
        self._fence_counter = keys.single("lock-fence")
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.renew_every_s = ttl_s / 3
        self.max_wait_s = max_wait_s
        scripts = wire if wire is not None else client
        self._take = scripts.register_script(_TAKE)
        self._check = scripts.register_script(_CHECK)
        self._let_go = scripts.register_script(_LET_GO)
        # Releases left to finish on their own, so the tasks are not collected meanwhile.
        self._releasing: set[asyncio.Task[None]] = set()

    def hold(self, key: str) -> _RedisHolding:
        return _RedisHolding(RedisLockSet(self, [key]))

    def hold_all(self, keys: Iterable[str], read_ahead: Iterable[CacheKeys] = ()) -> RedisLockSet:
        """Hold several keys: taken in sorted order, so two holders cannot deadlock."""
        return RedisLockSet(self, keys, read_ahead)

    def lock_key(self, key: str) -> str:
        return self._space.key("lock", key)

    def shared_cache(self, cache: RecordCachePort[Any]) -> RedisRecordCache[Any] | None:
        """``cache`` when its work can ride in these locks' scripts: a Redis cache on the
        same server that keeps anything. Any other cache is called as it is."""
        if isinstance(cache, RedisRecordCache) and cache.client is self._client:
            return cache if cache.enabled else None
        return None

    @redis_port
    async def take(
        self, keys: list[str], values: list[str], reads: list[tuple[str, int]]
    ) -> tuple[list[int], list[bytes | None]] | None:
        """Take every key (with its value) or none: their fencing tokens and the cache
        entries ``reads`` names (Redis key, life in ms), or None when a key is busy."""
        names = [self.lock_key(key) for key in keys]
        lives = [life for _name, life in reads]
        answer = await self._take(
            keys=[*names, self._fence_counter, *(name for name, _life in reads)],
            args=[len(names), self.ttl_ms, fence_floor(), *values, *lives],
        )
        if not answer:
            return None
        fences, found = answer
        return [int(fence) for fence in fences], [value or None for value in found]

    async def renew(self, keys: list[str], values: list[str]) -> int:
        return await self.check(keys, values, [])

    @redis_port
    async def check(
        self, keys: list[str], values: list[str], tombstones: list[tuple[str, int]]
    ) -> int:
        """Renew the keys still held; when every one is, write the tombstones (Redis key,
        life in ms). How many keys were held."""
        names = [self.lock_key(key) for key in keys]
        answer = await self._check(
            keys=[*names, *(name for name, _life in tombstones)],
            args=[len(names), self.ttl_ms, *values, *(life for _name, life in tombstones)],
        )
        return int(answer)

    @redis_port
    async def release(
        self, keys: list[str], values: list[str], puts: Sequence[tuple[str, bytes, int]] = ()
    ) -> int:
        """Write ``puts`` (Redis key, value, life in ms) while every key is held, then
        release the keys; how many were released."""
        names = [self.lock_key(key) for key in keys]
        answer = await self._let_go(
            keys=[*names, *(name for name, _value, _life in puts)],
            args=[len(names), *values, *(part for _n, v, ms in puts for part in (v, ms))],
        )
        return int(answer)

    def release_later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="tessera-lock-release")
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)


class RedisLockSet:
    """Keys held together by one holder (see ``core/locks.LockSet`` for the rules), and
    the cache work on the records they guard, each step one script (``LockSetLike``)."""

    def __init__(
        self, owner: RedisLocks, keys: Iterable[str], read_ahead: Iterable[CacheKeys] = ()
    ) -> None:
        self._owner = owner
        self._wanted = sorted(set(keys))
        self._read_ahead = list(read_ahead)
        # Key → (the value this holder wrote, its fencing token), in acquisition order.
        self._held: dict[str, tuple[str, int]] = {}
        # Cache entries read with the locks, by Redis key: encoded records, None for a miss.
        self._found: dict[str, bytes | None] = {}
        self._puts: list[CachePut[Any]] = []
        # Renewal: a timer while held, a task only while a renewal is under way. A task per
        # holder from the start cost every request a task created and cancelled, for a
        # renewal that almost never comes (most holds end long before a third of the TTL).
        self._renewal_timer: asyncio.TimerHandle | None = None
        self._renewal: asyncio.Task[None] | None = None
        self._done = False

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self._held)

    def fence(self, key: str) -> int | None:
        held = self._held.get(key)
        return held[1] if held is not None else None

    async def __aenter__(self) -> RedisLockSet:
        self._schedule_renewal()
        try:
            # Uncontended, every key is free: one round trip takes them all and reads ahead.
            # Contended, they are waited for one by one, and the last one's round trip reads
            # ahead (every guarding lock is held by then).
            if not await self._take_now(self._wanted, self._read_ahead):
                for place, key in enumerate(self._wanted, start=1):
                    last = place == len(self._wanted)
                    await self._take_waiting(key, self._read_ahead if last else [])
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

    async def try_add(self, keys: Iterable[str], read_ahead: Iterable[CacheKeys] = ()) -> bool:
        """Take every key that is free right now, or none of them; never waits."""
        return await self._take_now(sorted(set(keys) - self._held.keys()), list(read_ahead))

    def found(self, cache: RecordCachePort[R], key: str) -> Found[R] | None:
        shared = self._owner.shared_cache(cache)
        if shared is None:
            return None
        name = shared.redis_key(key)
        if name not in self._found:
            return None
        raw = self._found[name]
        if raw is None:
            # Answered once: the caller reads storage and fills the entry; a later read of
            # the entry finds it there.
            del self._found[name]
            return Found(None)
        return Found(shared.decode(raw))

    async def still_held(self, discard: Iterable[CacheKeys] = ()) -> bool:
        """Whether every key still holds this holder's value; extends them while at it, so the
        commit that follows has a whole TTL, and makes the entries of ``discard`` misses. A
        Redis that cannot answer is RedisUnavailable: nothing may be committed either way."""
        # What was read ahead is about to be changed by the commit that follows.
        self._found.clear()
        tombstones: list[tuple[str, int]] = []
        others: list[CacheKeys] = []
        for entries in discard:
            shared = self._owner.shared_cache(entries.cache)
            if shared is None:
                others.append(entries)
            else:
                tombstones += [(shared.redis_key(k), shared.tombstone_ms) for k in entries.keys]
        held = True
        if self._held or tombstones:
            keys = list(self._held)
            values = [self._held[key][0] for key in keys]
            held = await self._owner.check(keys, values, tombstones) == len(keys)
        if held:
            for entries in others:
                await entries.cache.discard(*entries.keys)
        return held

    def put_on_release(self, puts: Iterable[CachePut[Any]]) -> None:
        self._puts += puts

    async def _take_now(self, keys: list[str], read_ahead: list[CacheKeys]) -> bool:
        if not keys:
            return True
        values = [secrets.token_hex(12) for _ in keys]
        reads = self._reads(read_ahead)
        try:
            taken = await self._owner.take(keys, values, reads)
        except BaseException as error:
            # Cancelled (or cut off) after Redis may have run the script: the values are ours
            # alone, so releasing them is safe whether it did or not. Cut off, the release is
            # not waited for: it would most likely wait a whole timeout more for nothing.
            if isinstance(error, RedisUnavailable):
                self._owner.release_later(self._release_quietly(keys, values))
            else:
                await self._release_quietly(keys, values)
            raise
        if taken is None:
            return False
        fences, found = taken
        for key, value, fence in zip(keys, values, fences, strict=True):
            self._held[key] = (value, fence)
        for (name, _life), raw in zip(reads, found, strict=True):
            self._found[name] = raw
        return True

    def _reads(self, read_ahead: list[CacheKeys]) -> list[tuple[str, int]]:
        reads: list[tuple[str, int]] = []
        for entries in read_ahead:
            shared = self._owner.shared_cache(entries.cache)
            if shared is not None:
                reads += [(shared.redis_key(key), shared.ttl_ms) for key in entries.keys]
        return reads

    async def _take_waiting(self, key: str, read_ahead: list[CacheKeys]) -> None:
        if key in self._held:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._owner.max_wait_s
        tries = 0
        while not await self._take_now([key], read_ahead):
            if loop.time() >= deadline:
                raise Busy("a profile stayed locked too long; retry")
            tries += 1
            await asyncio.sleep(backoff_delay(tries, FIRST_PAUSE_S, LONGEST_PAUSE_S))

    def _schedule_renewal(self) -> None:
        if not self._done:
            self._renewal_timer = asyncio.get_running_loop().call_later(
                self._owner.renew_every_s, self._start_renewal
            )

    def _start_renewal(self) -> None:
        self._renewal_timer = None
        if not self._done:
            self._renewal = asyncio.get_running_loop().create_task(
                self._renew_once(), name="tessera-lock-renewal"
            )

    async def _renew_once(self) -> None:
        """One tick of renewal, then the next one is scheduled."""
        try:
            if not self._held:
                return
            keys = list(self._held)
            try:
                renewed = await self._owner.renew(keys, [self._held[key][0] for key in keys])
            except RedisUnavailable as exc:
                # Retried at the next tick; ``still_held`` reports the loss if it comes to that.
                log.warning("could not renew %d lock(s): %s", len(keys), exc)
                return
            if renewed < len(keys):
                log.warning(
                    "%d of %d lock(s) expired under their holder", len(keys) - renewed, len(keys)
                )
        finally:
            self._renewal = None
            self._schedule_renewal()

    async def _let_go(self, *, cut_off: bool = False) -> None:
        """Stop renewing, put the committed records back and release, in one script.
        ``cut_off`` (this holder failed for want of Redis), or Redis failing the last
        command: the records are not put back (their entries are misses already) and the
        release is left to finish on its own rather than waited for; it would most likely
        make the answer wait a whole timeout more, and the keys expire within the TTL anyway
        if it fails too."""
        # The renewal is stopped, not waited for: a cancellation landing inside a Redis call
        # can be lost (it has been seen to be), and a late renewal is harmless anyway — it only
        # extends keys still holding this holder's value, and release deletes those.
        self._done = True
        timer, self._renewal_timer = self._renewal_timer, None
        if timer is not None:
            timer.cancel()
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            renewal.cancel()
        held, self._held = self._held, {}
        puts, self._puts = self._puts, []
        self._found.clear()
        failing = cut_off or self._owner.health.failing
        shared_puts: list[tuple[str, bytes, int]] = []
        if not failing:
            shared_puts = await self._put_others(puts)
        if not held and not shared_puts:
            return
        release = self._release_quietly(
            list(held), [value for value, _fence in held.values()], shared_puts
        )
        if failing:
            self._owner.release_later(release)
        else:
            await release

    async def _put_others(self, puts: list[CachePut[Any]]) -> list[tuple[str, bytes, int]]:
        """Puts records in the caches that cannot ride in the release script (best effort,
        as ``VisitorDirectory.commit`` says); answers the others' (Redis key, value, life)."""
        shared_puts: list[tuple[str, bytes, int]] = []
        for put in puts:
            shared = self._owner.shared_cache(put.cache)
            if shared is not None:
                value, life_ms = shared.stored_form(put.record)
                shared_puts.append((shared.redis_key(put.key), value, life_ms))
                continue
            try:
                await put.cache.put(put.key, put.record)
            except StorageUnavailable as exc:
                log.warning("a committed record was not put back in the cache: %s", exc)
        return shared_puts

    async def _release_quietly(
        self, keys: list[str], values: list[str], puts: Sequence[tuple[str, bytes, int]] = ()
    ) -> None:
        """Release (after ``puts``); when Redis cannot be reached the keys expire on their own
        within the TTL, and the records stay misses, so the failure is logged rather than
        hiding the caller's own outcome."""
        try:
            await self._owner.release(keys, values, puts)
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
