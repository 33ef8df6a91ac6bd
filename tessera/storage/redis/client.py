"""The Redis connection built from the settings, and the names of the keys Tessera writes."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from tessera.settings import Settings


def redis_client(settings: Settings) -> Redis:
    """A pooled client for ``REDIS_HOST``; it connects on first use."""
    if settings.redis_host is None:
        raise ValueError("REDIS_HOST is not set")
    return Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password,
        # Values are bytes (msgspec-encoded records); nothing is decoded for us.
        decode_responses=False,
        health_check_interval=30,
    )


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
