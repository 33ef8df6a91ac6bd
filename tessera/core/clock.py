"""The clock that in-process expiry reads: time to live of cache entries, refills of rate-limit
buckets. Injected, so tests move time on instead of sleeping against the real one (and no
test depends on how fast a shared machine happens to be). Expiry kept by a server (Redis key
TTLs, Elasticsearch, SQL rows compared with a stored time) follows that server's clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes backwards."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes backwards")
        self._now += seconds
