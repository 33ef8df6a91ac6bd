"""The Redis connection built from the settings, and the names of the keys Tessera writes."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tessera.settings import Settings, secret_value


def redis_client(settings: Settings) -> Redis:
    """A pooled client for ``REDIS_HOST``; it connects on first use.

    Every wait is bounded, so a Redis that is gone, silent or overloaded costs a request one
    timeout and then a 503 (the stores turn the errors into StorageUnavailable, outage.py):
    - connecting: ``TESSERA_REDIS_CONNECT_TIMEOUT_SECONDS``; each answer:
      ``TESSERA_REDIS_TIMEOUT_SECONDS``;
    - no command is sent again after a failure: redis-py's default would retry a command ten
      times, each waiting a full timeout, and a retried lock script whose first run took the
      lock would then find it busy (its own) and wait for it;
    - at most ``TESSERA_REDIS_POOL_SIZE`` connections; past that a request waits up to
      ``TESSERA_REDIS_POOL_TIMEOUT_SECONDS`` for one instead of failing at once.
    """
    if settings.redis_host is None:
        raise ValueError("REDIS_HOST is not set")
    pool = BlockingConnectionPool(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=secret_value(settings.redis_password),
        max_connections=settings.redis_pool_size,
        timeout=settings.redis_pool_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        # Values are bytes (msgspec-encoded records); nothing is decoded for us.
        decode_responses=False,
        health_check_interval=30,
    )
    return Redis.from_pool(pool)


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Every key under one prefix: ``{prefix}:{kind}:{name}``.

    Names joining a tenant and a key use NUL between them, as the in-process caches do, so a
    tenant ``a:b`` with key ``c`` never meets tenant ``a`` with key ``b:c``.
    """

    prefix: str

    def key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    def single(self, kind: str) -> str:
        """A key of which there is one per installation (counters, expiry indexes)."""
        return f"{self.prefix}:{kind}"

    def pattern(self) -> str:
        """Matches every key of this space (for SCAN-based cleanup in tests and tools)."""
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}:*"


def tenant_key(tenant: str, key: str) -> str:
    return f"{tenant}\x00{key}"
