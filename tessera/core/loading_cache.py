"""Configuration the ingest path reads on every request, loaded once per key and time to live.

``LoadingCache(load, ttl_s=…)``: ``await cache.get(key)`` answers from memory while fresh;
otherwise it loads, and requests that ask for the same key meanwhile share that one load (no
stampede of identical queries when an entry expires under load). ``forget`` drops entries when
this process changes the configuration; a load that began before the change is answered to
whoever waits for it but not kept, so the next request reads the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from tessera.core.clock import SYSTEM_CLOCK, Clock

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LoadingCache(Generic[K, V]):
    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        *,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._clock = clock
        self._load = load
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Task[V]] = {}
        self._generation = 0

    async def get(self, key: K) -> V:
        return (await self.entry(key))[1]

    async def entry(self, key: K) -> tuple[float, V]:
        """The value with the monotonic time it expires at, so that what is derived from it
        can be kept no longer than it."""
        cached = self._values.get(key)
        if cached is not None and cached[0] > self._clock.monotonic():
            return cached
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fill(key, self._generation))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        # shield: a caller that is cancelled (its client went away) must not cancel the load
        # others are waiting for.
        value = await asyncio.shield(task)
        kept = self._values.get(key)
        # Not kept (a forget() came during the load): fresh for one time to live all the same.
        return kept if kept is not None else (self._clock.monotonic() + self._ttl_s, value)

    async def _fill(self, key: K, generation: int) -> V:
        value = await self._load(key)
        if generation == self._generation:
            if len(self._values) >= self._max_entries:
                self._values.clear()  # keys may come from clients: never grow without bound
            self._values[key] = (self._clock.monotonic() + self._ttl_s, value)
        return value

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled():
            task.exception()  # retrieved, so a failed load is not reported as never awaited

    def forget(self, match: Callable[[K], bool] | None = None) -> None:
        """Drop the entries whose key ``match``es (every entry without one)."""
        self._generation += 1
        for store in (self._values, self._loading):
            for key in [key for key in store if match is None or match(key)]:
                del store[key]
