"""Everything Tessera keeps in Redis, built on one client: ``build_redis(settings)``.

The runtime picks these instead of the in-process ones when ``REDIS_HOST`` is set
(``storage/factory.py`` decides); ``start`` checks the server answers, ``close`` lets go of the
connections. The scripts of the request's hot path (the locks', and the caches' reading one)
run through a lean connection to the same server (``wire.py``); every other command through
the redis-py client.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tessera.core.cache import RecordCachePort
from tessera.core.locks import Locks
from tessera.core.throttle import BucketStore
from tessera.errors import StorageUnavailable
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.settings import Settings
from tessera.storage.automation_ports import KeyValueStore
from tessera.storage.dedup import DedupKeys
from tessera.storage.ports import TokenStore
from tessera.storage.redis.cache import RedisRecordCache
from tessera.storage.redis.client import KeySpace, redis_client
from tessera.storage.redis.dedup import RedisDedupKeys
from tessera.storage.redis.locks import RedisLocks
from tessera.storage.redis.memory import RedisKeyValueStore
from tessera.storage.redis.outage import RedisHealth
from tessera.storage.redis.throttle import RedisBuckets
from tessera.storage.redis.tokens import RedisTokenStore
from tessera.storage.redis.wire import RedisWire, redis_wire


@dataclass
class RedisServices:
    """Typed by port, which is all callers need (and has mypy check each one fits)."""

    client: Redis
    locks: Locks
    profile_cache: RecordCachePort[Profile]
    session_cache: RecordCachePort[Session]
    tokens: TokenStore
    memory: KeyValueStore
    dedup: DedupKeys
    buckets: BucketStore
    # Where the server is, for messages (never the password).
    where: str = "REDIS_HOST"
    # The lean connection the hot path's scripts run through; None: through ``client``.
    wire: RedisWire | None = None

    async def start(self) -> None:
        """Fail fast, with a clear message, when Redis cannot be reached."""
        try:
            await self.client.ping()
            if self.wire is not None:
                await self.wire.execute("PING")
        except (RedisError, OSError) as exc:
            raise StorageUnavailable(f"Redis at {self.where} does not answer: {exc}") from exc

    async def close(self) -> None:
        try:
            await self.client.aclose()
        finally:
            if self.wire is not None:
                await self.wire.aclose()


def redis_services(
    client: Redis,
    settings: Settings,
    *,
    prefix: str | None = None,
    wire: RedisWire | None = None,
) -> RedisServices:
    """The services on an existing client (and lean connection to the same server, for the
    scripts); ``prefix`` overrides ``TESSERA_REDIS_PREFIX``."""
    keys = KeySpace(prefix if prefix is not None else settings.redis_prefix)
    # One for all: whether Redis failed the last command, whichever store sent it.
    health = RedisHealth()
    return RedisServices(
        client=client,
        locks=RedisLocks(
            client,
            keys,
            ttl_s=settings.lock_ttl_seconds,
            max_wait_s=settings.lock_wait_seconds,
            health=health,
            wire=wire,
        ),
        profile_cache=RedisRecordCache(
            client,
            keys,
            "profile",
            Profile,
            ttl_s=settings.keep_profile_in_cache_for,
            health=health,
            max_entry_bytes=settings.cache_max_entry_bytes,
            wire=wire,
        ),
        session_cache=RedisRecordCache(
            client,
            keys,
            "session",
            Session,
            ttl_s=settings.keep_session_in_cache_for,
            health=health,
            max_entry_bytes=settings.cache_max_entry_bytes,
            wire=wire,
        ),
        tokens=RedisTokenStore(client, keys, health=health),
        memory=RedisKeyValueStore(client, keys, health=health),
        dedup=RedisDedupKeys(client, keys, health=health),
        buckets=RedisBuckets(client, keys, health=health),
        where=f"REDIS_HOST={settings.redis_host}:{settings.redis_port}",
        wire=wire,
    )


def build_redis(settings: Settings) -> RedisServices:
    """Every Redis-backed service for ``REDIS_HOST`` (which must be set)."""
    return redis_services(redis_client(settings), settings, wire=redis_wire(settings))
