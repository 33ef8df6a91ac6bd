"""Per-key serialisation on one event loop: one writer per profile at a time."""

from __future__ import annotations

import asyncio
from types import TracebackType


class KeyedLocks:
    """Locks created on demand and dropped when nobody holds or waits for them.

    ``async with locks.hold(key):`` — one key at a time; callers that need several keys take
    them in a fixed order (see pipeline/ingest.py), which is what rules out deadlocks.
    """

    def __init__(self) -> None:
        self._locks: dict[str, _Entry] = {}

    def hold(self, key: str) -> _Holding:
        return _Holding(self, key)

    def __len__(self) -> int:
        return len(self._locks)


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Holding:
    __slots__ = ("_entry", "_key", "_owner")

    def __init__(self, owner: KeyedLocks, key: str) -> None:
        self._owner = owner
        self._key = key
        self._entry: _Entry | None = None

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
