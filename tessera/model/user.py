"""Users of the management API and their access tokens."""

from __future__ import annotations

from datetime import datetime

import msgspec

ADMIN_ROLE = "admin"


class User(msgspec.Struct):
    id: str
    tenant: str
    email: str
    password_hash: str
    created: datetime
    roles: list[str] = msgspec.field(default_factory=lambda: [ADMIN_ROLE])
    enabled: bool = True


class AccessToken(msgspec.Struct):
    # Only a digest of the token is stored, so a copy of the database grants no access.
    digest: str
    tenant: str
    user_id: str
    created: datetime
    expires: datetime
    revoked: bool = False
