"""Opaque access tokens: random, stored only as a digest, with an expiry, revocable."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from tessera.errors import Unauthorized
from tessera.model.common import utcnow
from tessera.model.user import AccessToken, User
from tessera.security.passwords import verify_password
from tessera.storage.ports import TokenStore, UserStore


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    value: str
    expires_in: int


class TokenService:
    def __init__(self, users: UserStore, tokens: TokenStore, *, ttl_s: int) -> None:
        self._users = users
        self._tokens = tokens
        self._ttl_s = ttl_s

    async def login(self, tenant: str, email: str, password: str) -> IssuedToken:
        user = await self._users.get_by_email(tenant, email.strip().lower())
        valid = await verify_password(user.password_hash if user else None, password)
        if user is None or not valid or not user.enabled:
            raise Unauthorized("wrong username or password")
        value = secrets.token_urlsafe(32)
        now = utcnow()
        await self._tokens.add(
            AccessToken(
                digest=digest(value),
                tenant=tenant,
                user_id=user.id,
                created=now,
                expires=now + timedelta(seconds=self._ttl_s),
            )
        )
        return IssuedToken(value=value, expires_in=self._ttl_s)

    async def authenticate(self, token: str) -> tuple[AccessToken, User]:
        found = await self._tokens.get_valid(digest(token), utcnow())
        if found is None:
            raise Unauthorized("the access token is unknown, expired or revoked")
        user = await self._users.get(found.tenant, found.user_id)
        if user is None or not user.enabled:
            raise Unauthorized("the token's user no longer exists or is disabled")
        return found, user

    async def revoke(self, token: str) -> bool:
        return await self._tokens.revoke(digest(token))
