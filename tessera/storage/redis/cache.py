"""The profile and session cache shared by every API process (``RecordCachePort`` on Redis).

Records are kept msgspec-encoded with a sliding expiry (``KEEP_PROFILE_IN_CACHE_FOR`` /
``KEEP_SESSION_IN_CACHE_FOR``); each read decodes a private copy, as ``RecordCache`` does.

Staleness is what a shared cache must not allow, and three rules keep it out:
- ``put`` (after a commit, under the record's lock) always overwrites (but is left out while
  Redis is failing: the record is a miss already);
- ``fill`` (after a storage read, without the lock) writes only when the key is empty, so a read
  that raced a commit cannot overwrite the newer record the committer put back;
- ``discard`` (before every commit of the record, see ``VisitorDirectory.commit``) leaves a
  short-lived tombstone rather than an empty key, so such a racing read cannot bring the old
  record back either, and a committer killed before its ``put`` leaves a miss rather than the
  version before its commit. A tombstone reads as a miss; the next ``put`` replaces it.

Size is bounded by Redis (``maxmemory`` with an LRU policy), not here; one entry is bounded
here (``TESSERA_CACHE_MAX_ENTRY_BYTES``): a larger record is not cached (``put`` leaves a
tombstone), so it is read from storage each time.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec
from redis.asyncio import Redis

from tessera.model.decoding import json_decoder
from tessera.storage.redis.client import KeySpace
from tessera.storage.redis.outage import RedisHealth

R = TypeVar("R", bound=msgspec.Struct)

TOMBSTONE = b""
# Long enough to outlast any storage read that began before the discard.
TOMBSTONE_S = 60.0

# A hit extends the entry's life; a tombstone is a miss and keeps its own short life.
_GET = """
local value = redis.call('GET', KEYS[1])
if (not value) or value == '' then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return value
"""


class RedisRecordCache(Generic[R]):
    def __init__(
        self,
        client: Redis,
        keys: KeySpace,
        kind: str,
        record_type: type[R],
        *,
        ttl_s: float,
        health: RedisHealth | None = None,
        max_entry_bytes: int | None = None,
    ) -> None:
        self._max_entry_bytes = max_entry_bytes
        self._client = client
        self.health = health or RedisHealth()
        self._space = keys
        self._kind = kind
        self._ttl_ms = round(ttl_s * 1000)
        self._tombstone_ms = max(1, round(min(ttl_s, TOMBSTONE_S) * 1000))
        self._encode = msgspec.json.Encoder().encode
        self._decode = json_decoder(record_type)
        self._get = client.register_script(_GET)

    @property
    def enabled(self) -> bool:
        return self._ttl_ms > 0

    def _key(self, key: str) -> str:
        return self._space.key(self._kind, key)

    async def get(self, key: str) -> R | None:
        if not self.enabled:
            return None
        with self.health.watch():
            raw = await self._get(keys=[self._key(key)], args=[self._ttl_ms])
        return self._decode(raw) if raw else None

    async def put(self, key: str, record: R) -> None:
        # Only ever after a commit whose records were made misses first (discard): while
        # Redis fails, leaving the miss costs nothing, and waiting for Redis would.
        if self.enabled and not self.health.failing:
            encoded = self._encode(record)
            with self.health.watch():
                if self._fits(encoded):
                    await self._client.set(self._key(key), encoded, px=self._ttl_ms)
                else:
                    await self._client.set(self._key(key), TOMBSTONE, px=self._tombstone_ms)

    async def fill(self, key: str, record: R) -> None:
        if self.enabled:
            encoded = self._encode(record)
            if not self._fits(encoded):
                return
            with self.health.watch():
                await self._client.set(self._key(key), encoded, px=self._ttl_ms, nx=True)

    def _fits(self, encoded: bytes) -> bool:
        return self._max_entry_bytes is None or len(encoded) <= self._max_entry_bytes

    async def discard(self, *keys: str) -> None:
        if not self.enabled or not keys:
            return
        with self.health.watch():
            if len(keys) == 1:
                await self._client.set(self._key(keys[0]), TOMBSTONE, px=self._tombstone_ms)
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(self._key(key), TOMBSTONE, px=self._tombstone_ms)
                await pipe.execute()
