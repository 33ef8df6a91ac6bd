"""A sorted set of keys by expiry time, for ``purge_expired(now)`` on stores whose callers pass
the clock in: Redis expires keys by its own clock, the ports by the ``now`` they are given.

Members are names of data keys; the score is the expiry in UTC epoch seconds. Purging removes
each member due by ``now`` together with its data key, in one script per member so that a key
set again meanwhile (with a later expiry) is left alone.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

# KEYS: the index, the data key; ARGV: the member, now.
_PURGE_ONE = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if due and tonumber(due) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

PAGE = 500


class ExpiryIndex:
    def __init__(self, client: Redis, index_key: str, data_key_prefix: str) -> None:
        self._client = client
        self.key = index_key
        self._data_key_prefix = data_key_prefix
        self._purge_one = client.register_script(_PURGE_ONE)

    def data_key(self, member: str) -> str:
        return self._data_key_prefix + member

    async def purge(self, now_epoch: float) -> int:
        """Remove every member (and its data key) due by ``now_epoch``; how many."""
        purged = 0
        while True:
            found = await self._client.zrangebyscore(
                self.key, "-inf", repr(now_epoch), start=0, num=PAGE
            )
            members = cast(list[bytes], found)
            if not members:
                return purged
            async with self._client.pipeline(transaction=False) as pipe:
                for raw in members:
                    member = raw.decode()
                    # Queued on the pipeline (awaiting it sends nothing yet).
                    await self._purge_one(
                        keys=[self.key, self.data_key(member)],
                        args=[member, repr(now_epoch)],
                        client=pipe,
                    )
                results = await pipe.execute()
            done = sum(int(result) for result in results)
            purged += done
            if done == 0:
                return purged  # what is left was set again meanwhile, with a later expiry
