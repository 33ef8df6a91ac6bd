"""Throttling with token buckets (docs/security.md, "Throttling").

A bucket holds up to ``per_minute`` tokens and gains ``per_minute`` of them a minute; each
attempt takes one, and an attempt that finds the bucket empty is answered 429 with
``Retry-After`` (the seconds until a token is back). So a client may make ``per_minute``
attempts at once, then one every ``60 / per_minute`` seconds.

Buckets live in a ``BucketStore``: in the process (``InProcessBuckets``, embedded mode), or in
Redis when ``REDIS_HOST`` is set (``storage/redis/throttle.py``), so that every API process
counts against the same buckets. ``storage/factory.py`` picks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from tessera.core.clock import SYSTEM_CLOCK, Clock
from tessera.errors import TooManyRequests


class BucketStore(Protocol):
    async def take(self, key: str, capacity: int, per_second: float) -> float:
        """Take a token from the bucket ``key``: 0 when one was there, else the seconds
        until one will be (nothing is taken then)."""
        ...


class InProcessBuckets:
    """Buckets of one process. At most ``max_keys`` are kept (the least recently used go
    first: a forgotten bucket starts full again), so a flood of addresses cannot fill memory."""

    def __init__(self, max_keys: int = 100_000, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, key: str, capacity: int, per_second: float) -> float:
        now = self._clock.monotonic()
        tokens, at = self._buckets.pop(key, (float(capacity), now))
        tokens = min(float(capacity), tokens + (now - at) * per_second)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / per_second
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class Throttle:
    """One kind of attempt (``name``) limited to ``per_minute`` per client (0: no limit)."""

    name: str
    per_minute: int
    # The setting, named in the answer so an operator knows what to change.
    setting: str
    buckets: BucketStore

    async def take(self, who: str, what: str) -> None:
        """TooManyRequests (429) when ``who`` has no attempt left; ``what`` names the attempt
        in the message."""
        if self.per_minute <= 0:
            return
        wait = await self.buckets.take(
            f"{self.name}:{who}", self.per_minute, self.per_minute / 60.0
        )
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"too many {what} from this address: at most {self.per_minute} a minute "
                f"({self.setting}); retry in {seconds} s",
                retry_after=seconds,
            )


@dataclass(frozen=True, slots=True)
class Throttles:
    login: Throttle
    install: Throttle
    new_profiles: Throttle
