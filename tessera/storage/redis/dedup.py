"""Deduplication keys on Redis (``DedupKeys``): the first claim of a key wins across every
API process, and the key is forgotten after its time to live."""

from __future__ import annotations

import math

from redis.asyncio import Redis

from tessera.storage.redis.client import KeySpace, tenant_key
from tessera.storage.redis.outage import RedisHealth, redis_port


class RedisDedupKeys:
    def __init__(self, client: Redis, keys: KeySpace, *, health: RedisHealth | None = None) -> None:
        self._client = client
        self.health = health or RedisHealth()
        self._space = keys

    @redis_port
    async def claim(self, tenant: str, key: str, ttl_s: float) -> bool:
        name = self._space.key("dedup", tenant_key(tenant, key))
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        return bool(await self._client.set(name, b"1", px=ttl_ms, nx=True))
