"""The workflows' key-value memory on Redis (``KeyValueStore``), shared by every API process.

A value is stored with its expiry time (judged against the ``now`` callers pass, as the SQL
store does) and a Redis expiry of the same length, so dead keys go away even if nobody purges.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import msgspec
from redis.asyncio import Redis

from tessera.storage.redis.client import KeySpace, tenant_key
from tessera.storage.redis.expiry_index import ExpiryIndex
from tessera.storage.redis.outage import RedisHealth, redis_port
from tessera.storage.redis.tokens import epoch


class _Stored(msgspec.Struct, array_like=True):
    # UTC epoch seconds; None: kept until deleted.
    expires: float | None
    value: Any


class RedisKeyValueStore:
    def __init__(self, client: Redis, keys: KeySpace, *, health: RedisHealth | None = None) -> None:
        self._client = client
        self.health = health or RedisHealth()
        self._index = ExpiryIndex(client, keys.single("memory-expiry"), keys.key("memory", ""))
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(_Stored).decode

    @redis_port
    async def get(self, tenant: str, key: str, now: datetime) -> Any | None:
        raw = await self._client.get(self._index.data_key(tenant_key(tenant, key)))
        if raw is None:
            return None
        stored = self._decode(raw)
        if stored.expires is not None and stored.expires <= epoch(now):
            return None
        return stored.value

    @redis_port
    async def set(
        self, tenant: str, key: str, value: Any, *, ttl_s: float | None, now: datetime
    ) -> None:
        member = tenant_key(tenant, key)
        data_key = self._index.data_key(member)
        async with self._client.pipeline(transaction=True) as pipe:
            if ttl_s is None:
                pipe.set(data_key, self._encode(_Stored(None, value)))
                pipe.zrem(self._index.key, member)
            else:
                expires = epoch(now) + ttl_s
                raw = self._encode(_Stored(expires, value))
                pipe.set(data_key, raw, px=max(1, math.ceil(ttl_s * 1000)))
                pipe.zadd(self._index.key, {member: expires})
            await pipe.execute()

    @redis_port
    async def delete(self, tenant: str, key: str) -> bool:
        member = tenant_key(tenant, key)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._index.data_key(member))
            pipe.zrem(self._index.key, member)
            deleted, _removed = await pipe.execute()
        return bool(deleted)

    @redis_port
    async def purge_expired(self, now: datetime) -> int:
        return await self._index.purge(epoch(now))
