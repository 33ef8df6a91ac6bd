"""The storage ports: small async protocols every backend implements.

Nothing outside ``storage/`` knows which backend sits behind a port. Reads go through the
stores; every write of events, sessions and profiles goes through the ``RecordWriter``, which
commits them in groups (one transaction or bulk request for many callers) and answers each
caller only once its records are durable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from tessera.model.consent import ConsentType
from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.model.source import EventSource
from tessera.model.user import AccessToken, User
from tessera.storage.search import SearchRequest


@dataclass(frozen=True, slots=True)
class IdentityLink:
    """The identity index maps a salted hash of a merge-key value to the profile holding it."""

    tenant: str
    digest: str
    profile_id: str


@dataclass(frozen=True, slots=True)
class RetiredProfile:
    """A profile merged into another: its last state is kept for unmerge, out of the way of
    reads (its id resolves to the survivor, which lists it in ``ids``)."""

    profile: Profile
    survivor_id: str


@dataclass(frozen=True, slots=True)
class Erasure:
    """Everything held about one person: the profile, every id that resolved to it, and the
    sessions, events, identity links and retired profiles of those ids."""

    tenant: str
    profile_ids: tuple[str, ...]
    # True: remove the profile, its ids and identity links, but keep sessions and events.
    keep_records: bool = False


@dataclass(slots=True)
class ChangeSet:
    """Records one caller wants stored together, in one transaction. Profiles and sessions are
    upserts; events are inserted once and never overwritten (a repeated event id is ignored)."""

    events: list[Event] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    identities: list[IdentityLink] = field(default_factory=list)
    released_identities: list[tuple[str, str]] = field(default_factory=list)
    retired: list[RetiredProfile] = field(default_factory=list)
    # (tenant, profile id) of retired profiles brought back by an unmerge.
    restored: list[tuple[str, str]] = field(default_factory=list)
    erasures: list[Erasure] = field(default_factory=list)
    # The version of each record by (kind, tenant, id), kind "profile" or "session": the
    # fencing token of the lock its writer holds (``LockSetLike.fence``), for every profile
    # and session written, every retired profile deleted from its partition and every erased
    # profile. A store without transactions (Elasticsearch) writes the record only when no
    # later lock holder has written it (a bulk that timed out and lands late must not put an
    # older version back) and fails the commit with StorageUnavailable otherwise. A record
    # without a version is written unconditionally; SQLite ignores them all (one writer
    # thread: nothing lands late). Not counted by ``len``: versions are not records.
    versions: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return (
            len(self.events)
            + len(self.sessions)
            + len(self.profiles)
            + len(self.identities)
            + len(self.released_identities)
            + len(self.retired)
            + len(self.restored)
            + len(self.erasures)
        )


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    total: int
    items: list[T]


@dataclass(frozen=True, slots=True)
class SearchPage(Generic[T]):
    total: int
    items: list[T]
    # Present when there may be more, on the default order: pass it back for the next page.
    next_cursor: str | None = None


class RecordWriter(Protocol):
    async def commit(self, changes: ChangeSet) -> None:
        """Return once ``changes`` are durable; raise StorageUnavailable when they are not."""
        ...


class EventStore(Protocol):
    async def get(
        self, tenant: str, event_id: str, *, moment: datetime | None = None
    ) -> Event | None:
        """The event of this id. ``moment``: the moment the event is filed under (its time
        within the bounds around its arrival, model/event_time.filed_moment), which places it
        in a store cut in time partitions, so it is read there alone."""
        ...

    async def existing_ids(
        self,
        tenant: str,
        event_ids: Sequence[str],
        *,
        moments: Mapping[str, datetime] | None = None,
    ) -> set[str]:
        """The subset of ``event_ids`` already stored; ``moments`` as ``get``'s, by id."""
        ...

    async def search(self, tenant: str, request: SearchRequest) -> SearchPage[Event]:
        """Events matching the condition, translated into the backend's own query language
        (never filtered in Python after a scan), with the total that match."""
        ...

    async def for_profiles(
        self,
        tenant: str,
        profile_ids: Sequence[str],
        *,
        event_type: str | None = None,
        limit: int = 20,
        offset: int = 0,
        fresh: bool = False,
    ) -> Page[Event]:
        """Events of any of ``profile_ids`` (one person's ids), newest first, with the total;
        ``fresh`` as SessionStore.for_profiles' (every event stored so far counts)."""
        ...

    def pages_for_profiles(
        self, tenant: str, profile_ids: Sequence[str]
    ) -> AsyncIterator[list[Event]]:
        """Every event of any of ``profile_ids``, newest first, a page at a time: however
        many there are (export), each once."""
        ...


class SessionStore(Protocol):
    async def get(self, tenant: str, session_id: str) -> Session | None: ...

    async def for_profiles(
        self,
        tenant: str,
        profile_ids: Sequence[str],
        *,
        limit: int = 100,
        offset: int = 0,
        fresh: bool = False,
    ) -> Page[Session]:
        """Sessions owned by any of ``profile_ids``, most recently active first. ``fresh``:
        every session stored so far counts, also in a store whose searches lag behind its
        writes (Elasticsearch refreshes first); for decisions, not for listings."""
        ...

    def pages_for_profiles(
        self, tenant: str, profile_ids: Sequence[str]
    ) -> AsyncIterator[list[Session]]:
        """Every session of any of ``profile_ids``, most recently active first, a page at a
        time: however many there are (export), each once."""
        ...


class ProfileStore(Protocol):
    async def get(self, tenant: str, profile_id: str) -> Profile | None:
        """The profile with this id, or the one that lists it in its ``ids``."""
        ...

    async def search(self, tenant: str, request: SearchRequest) -> SearchPage[Profile]:
        """Profiles matching the condition, translated into the backend's own query
        language, with the total that match."""
        ...

    async def owners(self, tenant: str, digests: Sequence[str]) -> dict[str, str]:
        """For each identity digest that is indexed, the id of the profile holding it."""
        ...

    async def retired(self, tenant: str, profile_id: str) -> RetiredProfile | None:
        """The last state of a profile merged into another, for unmerge."""
        ...


class SourceStore(Protocol):
    async def get(self, tenant: str, source_id: str) -> EventSource | None: ...

    async def list(self, tenant: str) -> list[EventSource]: ...

    async def save(self, source: EventSource) -> None:
        """Create the source, or replace the one with the same id."""
        ...

    async def delete(self, tenant: str, source_id: str) -> bool: ...


class ErasedProfiles(Protocol):
    """The ids of profiles erased on request: a new profile never takes one of them again, so
    a browser that still holds the id does not bring the person back (docs/security.md)."""

    async def remember(self, tenant: str, profile_ids: Sequence[str], when: datetime) -> None: ...

    async def erased(self, tenant: str, profile_id: str) -> bool: ...


class ConsentTypeStore(Protocol):
    async def get(self, tenant: str, consent_id: str) -> ConsentType | None: ...

    async def list(self, tenant: str) -> list[ConsentType]: ...

    async def save(self, consent: ConsentType) -> None:
        """Create the consent type, or replace the one with the same id."""
        ...

    async def delete(self, tenant: str, consent_id: str) -> bool: ...


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


class SharedValues(Protocol):
    async def keep_value(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless a value is stored already; return the stored
        one. Shared values (like the identity hash salt) are made once, by whoever is first."""
        ...
