"""The storage ports: small async protocols every backend implements.

Nothing outside ``storage/`` knows which backend sits behind a port. Reads go through the
stores; every write of events, sessions and profiles goes through the ``RecordWriter``, which
commits them in groups (one transaction or bulk request for many callers) and answers each
caller only once its records are durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.model.source import EventSource
from tessera.model.user import AccessToken, User


@dataclass(slots=True)
class ChangeSet:
    """Records one caller wants stored together. Profiles and sessions are upserts; events are
    inserted once and never overwritten (a repeated event id is ignored, not stored twice)."""

    events: list[Event] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.sessions) + len(self.profiles)


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    total: int
    items: list[T]


class RecordWriter(Protocol):
    async def commit(self, changes: ChangeSet) -> None:
        """Return once ``changes`` are durable; raise StorageUnavailable when they are not."""
        ...


class EventStore(Protocol):
    async def get(self, tenant: str, event_id: str) -> Event | None: ...

    async def existing_ids(self, tenant: str, event_ids: Sequence[str]) -> set[str]:
        """The subset of ``event_ids`` already stored."""
        ...

    async def for_profiles(
        self,
        tenant: str,
        profile_ids: Sequence[str],
        *,
        event_type: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> Page[Event]:
        """Events of any of ``profile_ids`` (one person's ids), newest first, with the total."""
        ...


class SessionStore(Protocol):
    async def get(self, tenant: str, session_id: str) -> Session | None: ...


class ProfileStore(Protocol):
    async def get(self, tenant: str, profile_id: str) -> Profile | None:
        """The profile with this id, or the one that lists it in its ``ids``."""
        ...


class SourceStore(Protocol):
    async def get(self, tenant: str, source_id: str) -> EventSource | None: ...

    async def list(self, tenant: str) -> list[EventSource]: ...

    async def save(self, source: EventSource) -> None:
        """Create the source, or replace the one with the same id."""
        ...

    async def delete(self, tenant: str, source_id: str) -> bool: ...


class UserStore(Protocol):
    async def get_by_email(self, tenant: str, email: str) -> User | None: ...

    async def get(self, tenant: str, user_id: str) -> User | None: ...

    async def add(self, user: User) -> None:
        """Store a new user; raise Conflict when the e-mail is taken."""
        ...

    async def count(self, tenant: str) -> int: ...


class TokenStore(Protocol):
    async def add(self, token: AccessToken) -> None: ...

    async def get_valid(self, digest: str, now: datetime) -> AccessToken | None:
        """The token with this digest when it is neither expired nor revoked."""
        ...

    async def revoke(self, digest: str) -> bool: ...

    async def purge_expired(self, now: datetime) -> int: ...


class SchemaStore(Protocol):
    async def create_schema(self) -> None:
        """Create every table/index this backend needs; safe to call again."""
        ...

    async def installed_version(self) -> int | None: ...
