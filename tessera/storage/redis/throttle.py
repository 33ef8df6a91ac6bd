"""Token buckets in Redis (``BucketStore``), shared by every API process: one script per
attempt reads, refills and takes from the bucket atomically, on Redis's own clock (the
processes' clocks may differ). A bucket's key expires once it would be full again."""

from __future__ import annotations

from redis.asyncio import Redis

from tessera.storage.redis.client import KeySpace
from tessera.storage.redis.outage import RedisHealth, redis_port

_TAKE = """
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_ms)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 1000)
return wait
"""


class RedisBuckets:
    def __init__(self, client: Redis, keys: KeySpace, *, health: RedisHealth) -> None:
        self.health = health
        self._keys = keys
        self._take = client.register_script(_TAKE)

    @redis_port
    async def take(self, key: str, capacity: int, per_second: float) -> float:
        wait_ms = await self._take(
            keys=[self._keys.key("throttle", key)], args=[capacity, per_second / 1000.0]
        )
        return int(wait_ms) / 1000.0
