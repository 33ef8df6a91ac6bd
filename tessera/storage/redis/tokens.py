"""Access tokens on Redis (``TokenStore``): every API process sees a login or a revocation.

A token is a hash (the encoded token, and a revoked flag a script can flip) that Redis itself
deletes at the token's expiry. Validity is still judged against the ``now`` the caller passes,
as the SQL store does; an expiry index lets ``purge_expired(now)`` count what it removes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from redis.asyncio import Redis

from tessera.model.user import AccessToken
from tessera.storage.redis.client import KeySpace
from tessera.storage.redis.expiry_index import ExpiryIndex
from tessera.storage.redis.outage import RedisHealth, redis_port

# KEYS: the token. Revokes a known, not yet revoked token; answers 1 when it did.
_REVOKE = """
if redis.call('HGET', KEYS[1], 'revoked') == '0' then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  return 1
end
return 0
"""


def epoch(moment: datetime) -> float:
    """UTC epoch seconds; a naive moment is taken as UTC, as everywhere in Tessera."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class RedisTokenStore:
    def __init__(self, client: Redis, keys: KeySpace, *, health: RedisHealth | None = None) -> None:
        self._client = client
        self.health = health or RedisHealth()
        self._index = ExpiryIndex(client, keys.single("token-expiry"), keys.key("token", ""))
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(AccessToken).decode
        self._revoke = client.register_script(_REVOKE)

    @redis_port
    async def add(self, token: AccessToken) -> None:
        key = self._index.data_key(token.digest)
        expires = epoch(token.expires)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={"token": self._encode(token), "revoked": "1" if token.revoked else "0"},
            )
            # An expiry already past makes Redis drop the key at once: nothing valid is lost.
            pipe.pexpireat(key, max(1, int(expires * 1000)))
            pipe.zadd(self._index.key, {token.digest: expires})
            await pipe.execute()

    @redis_port
    async def get_valid(self, digest: str, now: datetime) -> AccessToken | None:
        raw, revoked = await self._client.hmget(self._index.data_key(digest), ["token", "revoked"])
        if raw is None or revoked != b"0":
            return None
        token = self._decode(raw)
        if epoch(token.expires) <= epoch(now):
            return None
        return token

    @redis_port
    async def revoke(self, digest: str) -> bool:
        return bool(await self._revoke(keys=[self._index.data_key(digest)]))

    @redis_port
    async def purge_expired(self, now: datetime) -> int:
        return await self._index.purge(epoch(now))
