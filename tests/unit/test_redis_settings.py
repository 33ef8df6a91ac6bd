"""The Redis settings: read, checked in production, and turned into running services."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tessera.errors import ConfigurationError, StorageUnavailable
from tessera.settings import load_settings
from tessera.storage.redis.services import build_redis, redis_services
from tests.support.redis_service import REDIS_HOST, REDIS_PORT, reachable_client

STRONG_TOKEN = "a-long-installation-token-nobody-knows"


def test_redis_is_off_unless_a_host_is_named() -> None:
    settings = load_settings()
    assert settings.redis_host is None
    assert (settings.redis_port, settings.redis_db, settings.redis_prefix) == (6379, 0, "tessera")
    assert settings.lock_ttl_seconds == 10
    with pytest.raises(ValueError, match="REDIS_HOST"):
        build_redis(settings)


@pytest.mark.parametrize("weak", ["tessera", "tessera-dev-password", "short"])
def test_production_refuses_a_weak_redis_password_without_echoing_it(weak: str) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_PASSWORD") as refused:
        load_settings(
            TESSERA_ENV="production", INSTALLATION_TOKEN=STRONG_TOKEN, REDIS_PASSWORD=weak
        )
    assert weak not in str(refused.value)


def test_a_lock_ttl_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="TESSERA_LOCK_TTL_SECONDS"):
        load_settings(TESSERA_LOCK_TTL_SECONDS="0")


async def test_built_services_start_share_one_prefix_and_close() -> None:
    probe = await reachable_client()
    await probe.aclose()
    settings = load_settings(
        REDIS_HOST=REDIS_HOST,
        REDIS_PORT=str(REDIS_PORT),
        TESSERA_REDIS_PREFIX="tessera-test:build-redis",
    )
    services = build_redis(settings)
    await services.start()
    try:
        assert await services.dedup.claim("acme", "built", 5) is True
        assert await services.client.exists("tessera-test:build-redis:dedup:acme\x00built") == 1
    finally:
        await services.client.delete("tessera-test:build-redis:dedup:acme\x00built")
        await services.close()


async def test_an_unreachable_redis_is_reported_at_start() -> None:
    # Port 1 on loopback: nothing listens there. No retries, to answer at once.
    client = Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    services = redis_services(client, load_settings(REDIS_HOST="127.0.0.1", REDIS_PORT="1"))
    with pytest.raises(StorageUnavailable, match=r"Redis at REDIS_HOST=.* does not answer"):
        await services.start()
    await services.close()
