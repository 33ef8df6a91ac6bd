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

The locks (``storage/redis/locks.py``) do this cache's work on the records they guard in
their own scripts, so that a request makes one round trip for each of taking its locks and
reading its records, checking its locks and discarding, and putting back and letting go: the
methods below the port's give them this cache's key names, lifetimes and encoding.

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
from tessera.storage.redis.wire import RedisWire

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
        wire: RedisWire | None = None,
    ) -> None:
        """``wire``: the lean connection on ``client``'s server that runs the reading script;
        without one it runs through ``client``, as every other command does."""
        self._max_entry_bytes = max_entry_bytes
        self._client = client
        self.health = health or RedisHealth()
        self._space = keys
        self._kind = kind
        self._ttl_ms = round(ttl_s * 1000)
        self._tombstone_ms = max(1, round(min(ttl_s, TOMBSTONE_S) * 1000))
        self._encode = msgspec.json.Encoder().encode
        self._decode = json_decoder(record_type)
        self._get = (wire if wire is not None else client).register_script(_GET)

    @property
    def enabled(self) -> bool:
        return self._ttl_ms > 0

    @property
    def client(self) -> Redis:
        return self._client

    @property
    def ttl_ms(self) -> int:
        """How long an entry lives after it was written or last read."""
        return self._ttl_ms

    @property
    def tombstone_ms(self) -> int:
        return self._tombstone_ms

    def redis_key(self, key: str) -> str:
        return self._space.key(self._kind, key)

    def decode(self, raw: bytes) -> R:
        """A private copy of a stored entry (not a tombstone)."""
        return self._decode(raw)

    def stored_form(self, record: R) -> tuple[bytes, int]:
        """What ``put`` writes for ``record``, and for how many milliseconds: a tombstone
        when the record is too large to keep."""
        encoded = self._encode(record)
        if self._fits(encoded):
            return encoded, self._ttl_ms
        return TOMBSTONE, self._tombstone_ms

    async def get(self, key: str) -> R | None:
        if not self.enabled:
            return None
        with self.health.watch():
            raw = await self._get(keys=[self.redis_key(key)], args=[self._ttl_ms])
        return self._decode(raw) if raw else None

    async def put(self, key: str, record: R) -> None:
        # Only ever after a commit whose records were made misses first (discard): while
        # Redis fails, leaving the miss costs nothing, and waiting for Redis would.
        if self.enabled and not self.health.failing:
            value, life_ms = self.stored_form(record)
            with self.health.watch():
                await self._client.set(self.redis_key(key), value, px=life_ms)

    async def fill(self, key: str, record: R) -> None:
        if self.enabled:
            encoded = self._encode(record)
            if not self._fits(encoded):
                return
            with self.health.watch():
                await self._client.set(self.redis_key(key), encoded, px=self._ttl_ms, nx=True)

    def _fits(self, encoded: bytes) -> bool:
        return self._max_entry_bytes is None or len(encoded) <= self._max_entry_bytes

    async def discard(self, *keys: str) -> None:
        if not self.enabled or not keys:
            return
        with self.health.watch():
            if len(keys) == 1:
                await self._client.set(self.redis_key(keys[0]), TOMBSTONE, px=self._tombstone_ms)
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(self.redis_key(key), TOMBSTONE, px=self._tombstone_ms)
                await pipe.execute()
