"""Password hashing with argon2id."""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tessera.errors import InvalidPayload

MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidPayload(f"password: must have at least {MIN_PASSWORD_LENGTH} characters")


async def hash_password(password: str) -> str:
    # argon2 is deliberately slow; run it off the event loop so other requests keep flowing.
    return await asyncio.to_thread(_hasher.hash, password)


@functools.cache
def _unknown_user_hash() -> str:
    return _hasher.hash(secrets.token_hex(16))


async def verify_password(password_hash: str | None, password: str) -> bool:
    """``None`` stands for an unknown user: the check still runs, so a wrong e-mail takes as
    long as a wrong password and does not reveal which accounts exist."""

    def verify() -> bool:
        try:
            if password_hash is None:
                _hasher.verify(_unknown_user_hash(), password)
                return False
            return _hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)
