"""Per-key serialisation on one event loop: one writer per profile at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager


class KeyedLocks:
    """Locks created on demand and dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        # A fixed (sorted) order means two callers needing the same keys cannot deadlock.
        ordered = sorted(set(keys))
        acquired: list[str] = []
        try:
            for key in ordered:
                lock = self._enter(key)
                try:
                    await lock.acquire()
                except BaseException:
                    self._leave(key)
                    raise
                acquired.append(key)
            yield
        finally:
            for key in reversed(acquired):
                self._locks[key][0].release()
                self._leave(key)

    def _enter(self, key: str) -> asyncio.Lock:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        return lock

    def _leave(self, key: str) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
