"""Deduplication keys: "have I seen this (event id, delivery id …) before?" for a while.

``claim`` is true only the first time a tenant's key is claimed within its time to live, so a
caller that gets true does the work and every repeat (a retried request, a second process)
gets false. In-process here; ``tessera/storage/redis/dedup.py`` shares it between processes.
"""

from __future__ import annotations

import heapq
import time
from typing import Protocol


class DedupKeys(Protocol):
    async def claim(self, tenant: str, key: str, ttl_s: float) -> bool:
        """True the first time ``key`` is claimed for ``tenant`` within ``ttl_s`` seconds."""
        ...


class InProcessDedupKeys:
    """Claims in a dict; expired ones are swept in expiry order as new claims come in, so
    memory follows the keys alive, not every key ever claimed."""

    def __init__(self) -> None:
        self._expires: dict[tuple[str, str], float] = {}
        self._by_expiry: list[tuple[float, tuple[str, str]]] = []

    async def claim(self, tenant: str, key: str, ttl_s: float) -> bool:
        now = time.monotonic()
        self._sweep(now)
        name = (tenant, key)
        expires = self._expires.get(name)
        if expires is not None and expires > now:
            return False
        self._expires[name] = now + ttl_s
        heapq.heappush(self._by_expiry, (now + ttl_s, name))
        return True

    def _sweep(self, now: float) -> None:
        while self._by_expiry and self._by_expiry[0][0] <= now:
            due, name = heapq.heappop(self._by_expiry)
            if self._expires.get(name) == due:
                del self._expires[name]

    def __len__(self) -> int:
        return len(self._expires)
