"""Small pieces shared by every record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec

DEFAULT_TENANT = "default"


class Ref(msgspec.Struct, frozen=True):
    """A pointer to another record by id."""

    id: str


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())
