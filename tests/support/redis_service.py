"""The real Redis the tests run against (``bash scripts/services up`` starts it on loopback).

Every test works under its own key prefix, derived from its name and a random part, and
deletes what it wrote, so tests never see each other's keys and leave Redis as they found it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tessera.storage.redis.client import KeySpace
from tessera.storage.redis.wire import RedisWire
from tests.support.services import service_missing

REDIS_HOST = os.environ.get("TESSERA_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TESSERA_TEST_REDIS_PORT", "6379"))


def new_client() -> Redis:
    return Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=False)


def new_wire(port: int = REDIS_PORT, **options: Any) -> RedisWire:
    """A lean connection for scripts (storage/redis/wire.py) to the test Redis, or to another
    port (a relay in front of it); ``options`` as ``RedisWire`` takes them."""
    options = {"connect_timeout_s": 2.0, "timeout_s": 5.0, **options}
    return RedisWire(REDIS_HOST, port, **options)


async def reachable_client() -> Redis:
    """A client that answered PING, or the test is skipped, loudly, saying why."""
    client = new_client()
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        service_missing(
            f"REDIS NOT AVAILABLE at {REDIS_HOST}:{REDIS_PORT} ({exc!r}); "
            "start it with `bash scripts/services up`"
        )
    return client


def place_prefix(place: object) -> str:
    """The same place (a contract opener's folder) always names the same key space."""
    digest = hashlib.sha256(str(place).encode()).hexdigest()[:16]
    return f"tessera-test:place:{digest}"


def unique_prefix(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in name)[-60:]
    return f"tessera-test:{cleaned}:{secrets.token_hex(4)}"


async def delete_space(client: Redis, keys: KeySpace) -> None:
    found = [key async for key in client.scan_iter(match=keys.pattern(), count=500)]
    if found:
        await client.delete(*found)


@asynccontextmanager
async def redis_space(name: str) -> AsyncIterator[tuple[Redis, KeySpace]]:
    """A reachable client and a fresh key space, emptied on the way out."""
    client = await reachable_client()
    keys = KeySpace(unique_prefix(name))
    try:
        yield client, keys
    finally:
        await delete_space(client, keys)
        await client.aclose()
