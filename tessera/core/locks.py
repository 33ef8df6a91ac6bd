"""Per-key serialisation on one event loop: one writer per profile at a time.

``Locks`` / ``LockSetLike`` are what callers (ingest, profile operations, re-segmentation,
delayed steps) need from a lock service; ``KeyedLocks`` is the in-process one, and
``tessera/storage/redis/locks.py`` the one shared by several API processes.

A lock set also carries the cache work on the records its locks guard, so that a shared lock
service can do it in the same round trips as its own (Redis: one script each): reading the
records when their locks are taken (``read_ahead``), turning them into misses when checking the
locks before a commit (``still_held``), and putting the committed versions back when letting
go (``put_on_release``). The in-process set needs no round trips: it reads nothing ahead and
does the rest as it goes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Protocol, TypeVar

import msgspec

from tessera.core.cache import CacheKeys, CachePut, Found, RecordCachePort
from tessera.errors import Busy

R = TypeVar("R", bound=msgspec.Struct)


class LockSetLike(Protocol):
    """Several keys held together (see ``LockSet`` for why more are only added without
    waiting)."""

    @property
    def keys(self) -> frozenset[str]: ...

    async def __aenter__(self) -> LockSetLike: ...

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None: ...

    async def try_add(self, keys: Iterable[str], read_ahead: Iterable[CacheKeys] = ()) -> bool:
        """Take every key that is free right now, or none of them; never waits. The entries
        of ``read_ahead`` (records the new keys guard) may be read at the same time: see
        ``found``."""
        ...

    def found(self, cache: RecordCachePort[R], key: str) -> Found[R] | None:
        """What was read ahead of ``key`` in ``cache`` when its lock was taken (a private
        copy each time), or None when it was not: then read the cache. A miss is answered
        once (the caller reads storage and fills the cache); a hit until the next
        ``still_held``, which comes before a commit changes the record."""
        ...

    async def still_held(self, discard: Iterable[CacheKeys] = ()) -> bool:
        """Whether every key is still this holder's: checked right before committing, since
        a distributed lock can expire under a holder that stalled. When they are, the entries
        of ``discard`` are made misses (``RecordCachePort.discard``) before answering."""
        ...

    def put_on_release(self, puts: Iterable[CachePut[Any]]) -> None:
        """Committed records to put back in their caches (``RecordCachePort.put``) while the
        locks are still held, when letting go: best effort, a failure leaves misses."""
        ...

    def fence(self, key: str) -> int | None:
        """The fencing token of this holding of ``key`` (None when not held): larger for every
        later acquisition of the key, so a store can refuse writes from an older holder.

        Tokens serve as the record store's external versions (storage/elastic/writer.py), so
        they keep growing across processes, restarts and a switch between the in-process and
        the Redis locks: every token is at least the time it was taken at, in microseconds
        since the epoch (``fence_floor``), and above every token handed out before it by the
        same counter. A clock that steps back is harmless: the counter never decreases."""
        ...


def fence_floor() -> int:
    """The least fencing token a lock taken now may get: now, in microseconds since the epoch.
    A restarted process (or the other kind of lock service) starts above every token of the
    one before, as long as that one handed out fewer than a million tokens a second."""
    return time.time_ns() // 1000


class Locks(Protocol):
    def hold(self, key: str) -> AbstractAsyncContextManager[None]: ...

    def hold_all(self, keys: Iterable[str], read_ahead: Iterable[CacheKeys] = ()) -> LockSetLike:
        """Hold several keys, taken in sorted order so two holders cannot deadlock; the
        entries of ``read_ahead`` (records those keys guard) may be read as they are taken."""
        ...


class KeyedLocks:
    """Locks created on demand and dropped when nobody holds or waits for them.

    ``async with locks.hold(key):`` — one key at a time; callers that need several keys take
    them in a fixed order (see pipeline/ingest.py), which is what rules out deadlocks.
    """

    def __init__(self) -> None:
        self._locks: dict[str, _Entry] = {}
        self._last_fence = fence_floor() - 1

    def hold(self, key: str) -> _Holding:
        return _Holding(self, key)

    def hold_all(self, keys: Iterable[str], read_ahead: Iterable[CacheKeys] = ()) -> LockSet:
        """Hold several keys: taken in sorted order, so two holders cannot deadlock. Nothing
        is read ahead: an in-process cache costs no round trip."""
        return LockSet(self, keys)

    def __len__(self) -> int:
        return len(self._locks)

    def next_fence(self) -> int:
        """The next fencing token: one more than the last, or now when the clock is ahead."""
        self._last_fence = max(self._last_fence + 1, fence_floor())
        return self._last_fence


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Holding:
    __slots__ = ("_entry", "_key", "_owner", "fence")

    def __init__(self, owner: KeyedLocks, key: str) -> None:
        self._owner = owner
        self._key = key
        self._entry: _Entry | None = None
        self.fence = 0

    async def __aenter__(self) -> None:
        locks = self._owner._locks
        entry = locks.get(self._key)
        if entry is None:
            entry = locks[self._key] = _Entry()
        entry.users += 1
        self._entry = entry
        try:
            await entry.lock.acquire()
        except BaseException:
            self._leave()
            raise
        self.fence = self._owner.next_fence()

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        assert self._entry is not None
        self._entry.lock.release()
        self._leave()

    def _leave(self) -> None:
        assert self._entry is not None
        self._entry.users -= 1
        if self._entry.users == 0:
            del self._owner._locks[self._key]


class LockSet:
    """Several keys held together. More keys can be added later only without waiting
    (``try_add``): a holder that waited for a key while holding others could deadlock with a
    holder of that key waiting for one of these. When ``try_add`` fails, the caller lets go of
    everything and starts again asking for the whole set at once."""

    def __init__(self, owner: KeyedLocks, keys: Iterable[str]) -> None:
        self._owner = owner
        self._wanted = sorted(set(keys))
        self._held: list[_Holding] = []
        self._puts: list[CachePut[Any]] = []

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(holding._key for holding in self._held)

    async def __aenter__(self) -> LockSet:
        try:
            for key in self._wanted:
                holding = _Holding(self._owner, key)
                await holding.__aenter__()
                self._held.append(holding)
        except BaseException:
            await self._release()
            raise
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        await self._release()

    async def try_add(self, keys: Iterable[str], read_ahead: Iterable[CacheKeys] = ()) -> bool:
        """Take every key that is free right now, or none of them; never waits.

        A key nobody holds or waits for has no entry; its fresh lock is acquired without the
        event loop switching tasks, so no other task can take it between the check and here.
        """
        new = sorted(set(keys) - self.keys)
        if any(key in self._owner._locks for key in new):
            return False
        for key in new:
            holding = _Holding(self._owner, key)
            await holding.__aenter__()
            self._held.append(holding)
        return True

    def found(self, cache: RecordCachePort[R], key: str) -> Found[R] | None:
        return None

    async def still_held(self, discard: Iterable[CacheKeys] = ()) -> bool:
        """Always: an in-process lock cannot be taken away from a live holder."""
        for entries in discard:
            await entries.cache.discard(*entries.keys)
        return True

    def put_on_release(self, puts: Iterable[CachePut[Any]]) -> None:
        self._puts += puts

    def fence(self, key: str) -> int | None:
        return next((h.fence for h in self._held if h._key == key), None)

    async def _release(self) -> None:
        puts, self._puts = self._puts, []
        for put in puts:
            await put.cache.put(put.key, put.record)
        while self._held:
            await self._held.pop().__aexit__(None, None, None)


async def ensure_held(held: LockSetLike, discard: Iterable[CacheKeys] = ()) -> None:
    """Right before a commit: a lock that expired (its holder stalled past the lock's time to
    live, and another process may have taken it) must not let a stale write through. The
    caller answers 503 and the client retries. The entries of ``discard`` are made misses
    when the locks are held (see ``LockSetLike.still_held``)."""
    if not await held.still_held(discard):
        raise Busy("a lock of this request expired before it could commit; retry")
