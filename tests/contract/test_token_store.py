"""The TokenStore contract on the SQL store and on Redis, with instants around the real clock.

The configuration suite (test_config_stores.py) tests tokens with instants in 2024; Redis
deletes a token at its expiry by its own clock, so there every such token would be gone on
arrival. Here the same rules run with instants relative to now, plus what only Redis does:
the token disappears at its expiry without anyone purging it, and every process sees a
revocation made by another.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tessera.model.common import utcnow
from tessera.model.user import AccessToken
from tessera.storage.ports import TokenStore
from tessera.storage.redis.tokens import RedisTokenStore
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.stores import SqlSchemaStore, SqlTokenStore
from tests.support.redis_service import new_client, redis_space


@dataclass
class TokenPair:
    """Two views of one store, as two API processes have."""

    first: TokenStore
    second: TokenStore


TokenOpener = Callable[[Path, str], AbstractAsyncContextManager[TokenPair]]


@asynccontextmanager
async def sqlite_tokens(place: Path, _name: str) -> AsyncIterator[TokenPair]:
    engine = sqlite_engine(place)
    try:
        await SqlSchemaStore(engine).create_schema()
        yield TokenPair(SqlTokenStore(engine), SqlTokenStore(engine))
    finally:
        await engine.dispose()


@asynccontextmanager
async def redis_tokens(_place: Path, name: str) -> AsyncIterator[TokenPair]:
    async with redis_space(name) as (client, keys):
        other = new_client()
        try:
            yield TokenPair(RedisTokenStore(client, keys), RedisTokenStore(other, keys))
        finally:
            await other.aclose()


TOKEN_STORES: dict[str, TokenOpener] = {"sqlite": sqlite_tokens, "redis": redis_tokens}


@pytest.fixture(params=list(TOKEN_STORES))
async def tokens(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TokenPair]:
    async with TOKEN_STORES[request.param](tmp_path / "config", request.node.name) as pair:
        yield pair


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def make_token(
    secret: str, *, expires: datetime, tenant: str = "acme", revoked: bool = False
) -> AccessToken:
    return AccessToken(
        digest=digest(secret),
        tenant=tenant,
        user_id="u-1",
        created=utcnow(),
        expires=expires,
        revoked=revoked,
    )


async def test_a_valid_token_round_trips_to_the_other_process(tokens: TokenPair) -> None:
    now = utcnow()
    token = make_token("secret", expires=now + timedelta(hours=1), tenant="globex")
    await tokens.first.add(token)
    got = await tokens.second.get_valid(digest("secret"), now)
    assert got == token
    assert got is not None and (got.tenant, got.user_id, got.revoked) == ("globex", "u-1", False)
    assert await tokens.second.get_valid(digest("unknown"), now) is None


async def test_a_token_is_valid_until_its_expiry(tokens: TokenPair) -> None:
    now = utcnow()
    expires = now + timedelta(hours=1)
    await tokens.first.add(make_token("secret", expires=expires))
    assert await tokens.first.get_valid(digest("secret"), expires - timedelta(seconds=1))
    assert await tokens.first.get_valid(digest("secret"), expires) is None
    assert await tokens.first.get_valid(digest("secret"), expires + timedelta(days=1)) is None
    await tokens.first.add(make_token("born-expired", expires=now - timedelta(minutes=1)))
    assert await tokens.second.get_valid(digest("born-expired"), now) is None


async def test_a_revocation_holds_for_every_process(tokens: TokenPair) -> None:
    now = utcnow()
    expires = now + timedelta(hours=1)
    await tokens.first.add(make_token("kept", expires=expires))
    await tokens.first.add(make_token("revoked", expires=expires))
    await tokens.first.add(make_token("born-revoked", expires=expires, revoked=True))
    assert await tokens.second.revoke(digest("revoked")) is True
    assert await tokens.first.revoke(digest("revoked")) is False
    assert await tokens.second.revoke(digest("born-revoked")) is False
    assert await tokens.second.revoke(digest("unknown")) is False
    assert await tokens.first.get_valid(digest("revoked"), now) is None
    assert await tokens.first.get_valid(digest("born-revoked"), now) is None
    kept = await tokens.first.get_valid(digest("kept"), now)
    assert kept is not None and kept.revoked is False


async def test_purging_counts_the_expired_tokens_and_keeps_the_rest(tokens: TokenPair) -> None:
    now = utcnow()
    expired = [make_token(f"old-{i}", expires=now - timedelta(minutes=i + 1)) for i in range(3)]
    expired.append(make_token("old-revoked", expires=now - timedelta(hours=1), revoked=True))
    valid = [make_token(f"new-{i}", expires=now + timedelta(minutes=i + 1)) for i in range(2)]
    revoked_valid = make_token("revoked-valid", expires=now + timedelta(hours=1), revoked=True)
    for token in [*expired, *valid, revoked_valid]:
        await tokens.first.add(token)

    assert await tokens.second.purge_expired(now) == 4
    assert await tokens.second.purge_expired(now) == 0
    for token in valid:
        assert await tokens.first.get_valid(token.digest, now) == token
    for token in expired:
        assert await tokens.first.revoke(token.digest) is False
    assert await tokens.first.get_valid(revoked_valid.digest, now) is None
    assert await tokens.second.purge_expired(now + timedelta(hours=2)) == 3


async def test_redis_drops_a_token_at_its_expiry_without_a_purge() -> None:
    async with redis_space("token-expiry") as (client, keys):
        store = RedisTokenStore(client, keys)
        now = utcnow()
        await store.add(make_token("short", expires=now + timedelta(milliseconds=300)))
        key = keys.key("token", digest("short"))
        assert await client.exists(key) == 1
        ttl_ms = await client.pttl(key)
        assert 0 < ttl_ms <= 300
        await asyncio.sleep(0.5)
        assert await client.exists(key) == 0
        assert await store.revoke(digest("short")) is False
        # Its entry in the expiry index is still counted once by the next purge.
        assert await store.purge_expired(utcnow()) == 1
