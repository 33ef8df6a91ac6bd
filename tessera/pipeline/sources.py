"""Event sources as /track sees them: cached, so no configuration query runs per request."""

from __future__ import annotations

import time

from tessera.errors import Unauthorized
from tessera.model.source import EventSource
from tessera.storage.ports import SourceStore


class SourceDirectory:
    def __init__(self, store: SourceStore, *, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._cached: dict[tuple[str, str], tuple[float, EventSource | None]] = {}

    async def require_enabled(self, tenant: str, source_id: str) -> EventSource:
        """The source, or Unauthorized saying why events from it are refused."""
        source = await self._lookup(tenant, source_id)
        if source is None:
            raise Unauthorized(f"event source {source_id!r} does not exist")
        if not source.enabled:
            raise Unauthorized(f"event source {source_id!r} is disabled")
        return source

    async def _lookup(self, tenant: str, source_id: str) -> EventSource | None:
        key = (tenant, source_id)
        now = time.monotonic()
        cached = self._cached.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        source = await self._store.get(tenant, source_id)
        # Unknown ids are cached too, so a flood of bogus ids does not become a flood of queries;
        # the cache is bounded by dropping everything when it grows past a sane size.
        if len(self._cached) > 10_000:
            self._cached.clear()
        self._cached[key] = (now + self._ttl_s, source)
        return source

    def forget(self, tenant: str, source_id: str) -> None:
        """Called when this process changes a source, so the change applies at once."""
        self._cached.pop((tenant, source_id), None)

    async def save(self, source: EventSource) -> None:
        """Stores the source; this process uses the change from its next request on."""
        await self._store.save(source)
        self.forget(source.tenant, source.id)

    async def delete(self, tenant: str, source_id: str) -> bool:
        deleted = await self._store.delete(tenant, source_id)
        self.forget(tenant, source_id)
        return deleted
