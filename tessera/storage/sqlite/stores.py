"""Read side of the embedded store: events, sessions and profiles."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.storage.ports import Page, RetiredProfile, SearchPage
from tessera.storage.search import SearchRequest
from tessera.storage.sqlite.codec import decode_event, decode_profile, decode_session, encode
from tessera.storage.sqlite.readers import ReaderPool
from tessera.storage.sqlite.search import search

# SQLite's default limit on host parameters is 32766; stay well below it.
MAX_IDS_PER_QUERY = 500
T = TypeVar("T")
Row = tuple[object, object, str]
# Records per page when reading all of a person's events or sessions (export).
EXPORT_PAGE_SIZE = 1000


class SqliteEventStore:
    def __init__(self, readers: ReaderPool, *, page_size: int = EXPORT_PAGE_SIZE) -> None:
        self._readers = readers
        self._page_size = page_size

    async def get(
        self, tenant: str, event_id: str, *, moment: datetime | None = None
    ) -> Event | None:
        # One table, one index by id: the moment that places an event elsewhere is not needed.
        def query(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT doc FROM events WHERE tenant = ? AND id = ?", (tenant, event_id)
            ).fetchone()
            return row[0] if row else None

        doc = await self._readers.run(query)
        return decode_event(doc) if doc is not None else None

    async def existing_ids(
        self,
        tenant: str,
        event_ids: Sequence[str],
        *,
        moments: Mapping[str, datetime] | None = None,
    ) -> set[str]:
        wanted = list(dict.fromkeys(event_ids))

        def query(connection: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(wanted), MAX_IDS_PER_QUERY):
                chunk = wanted[start : start + MAX_IDS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                rows = connection.execute(
                    f"SELECT id FROM events WHERE tenant = ? AND id IN ({marks})",  # noqa: S608
                    (tenant, *chunk),
                )
                found.update(row[0] for row in rows)
            return found

        if not wanted:
            return set()
        return await self._readers.run(query)

    async def search(self, tenant: str, request: SearchRequest) -> SearchPage[Event]:
        return await search(self._readers, "events", tenant, request, decode_event)

    async def for_profiles(
        self,
        tenant: str,
        profile_ids: Sequence[str],
        *,
        event_type: str | None = None,
        limit: int = 20,
        offset: int = 0,
        fresh: bool = False,  # a search here sees every commit
    ) -> Page[Event]:
        ids = list(dict.fromkeys(profile_ids))
        if not ids:
            return Page(total=0, items=[])
        # One JSON parameter holds any number of ids; SQLite's host-parameter limit never bites.
        where = "tenant = ? AND profile_id IN (SELECT value FROM json_each(?))"
        params: list[object] = [tenant, encode(ids)]
        if event_type is not None:
            where += " AND type = ?"
            params.append(event_type)

        def query(connection: sqlite3.Connection) -> tuple[int, list[str]]:
            total = connection.execute(
                f"SELECT count(*) FROM events WHERE {where}",  # noqa: S608
                params,
            ).fetchone()[0]
            rows = connection.execute(
                f"SELECT doc FROM events WHERE {where}"  # noqa: S608
                " ORDER BY time DESC, rowid DESC LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
            return int(total), [row[0] for row in rows]

        total, docs = await self._readers.run(query)
        return Page(total=total, items=[decode_event(doc) for doc in docs])

    def pages_for_profiles(
        self, tenant: str, profile_ids: Sequence[str]
    ) -> AsyncIterator[list[Event]]:
        # Keyset pages on (time, rowid), newest first.
        return _keyset_pages(
            self._readers, _EVENT_PAGE, tenant, profile_ids, self._page_size, decode_event
        )


class SqliteSessionStore:
    def __init__(self, readers: ReaderPool, *, page_size: int = EXPORT_PAGE_SIZE) -> None:
        self._readers = readers
        self._page_size = page_size

    async def for_profiles(
        self,
        tenant: str,
        profile_ids: Sequence[str],
        *,
        limit: int = 100,
        offset: int = 0,
        fresh: bool = False,  # a search here sees every commit
    ) -> Page[Session]:
        ids = encode(list(dict.fromkeys(profile_ids)))
        # Without statistics the planner reads every session of the tenant to sort them (3 ms
        # at 10,000 sessions); the index by profile narrows it to this person's few.
        where = "tenant = ? AND profile_id IN (SELECT value FROM json_each(?))"

        def query(connection: sqlite3.Connection) -> tuple[int, list[str]]:
            total = connection.execute(
                f"SELECT count(*) FROM sessions INDEXED BY sessions_by_profile WHERE {where}",  # noqa: S608
                (tenant, ids),
            ).fetchone()[0]
            rows = connection.execute(
                f"SELECT doc FROM sessions INDEXED BY sessions_by_profile WHERE {where}"  # noqa: S608
                " ORDER BY updated DESC, id LIMIT ? OFFSET ?",
                (tenant, ids, limit, offset),
            ).fetchall()
            return int(total), [row[0] for row in rows]

        total, docs = await self._readers.run(query)
        return Page(total=total, items=[decode_session(doc) for doc in docs])

    def pages_for_profiles(
        self, tenant: str, profile_ids: Sequence[str]
    ) -> AsyncIterator[list[Session]]:
        # Keyset pages on (updated, id), most recently active first (ties by id, descending).
        return _keyset_pages(
            self._readers, _SESSION_PAGE, tenant, profile_ids, self._page_size, decode_session
        )

    async def get(self, tenant: str, session_id: str) -> Session | None:
        def query(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT doc FROM sessions WHERE tenant = ? AND id = ?", (tenant, session_id)
            ).fetchone()
            return row[0] if row else None

        doc = await self._readers.run(query)
        return decode_session(doc) if doc is not None else None


class SqliteProfileStore:
    def __init__(self, readers: ReaderPool) -> None:
        self._readers = readers

    async def search(self, tenant: str, request: SearchRequest) -> SearchPage[Profile]:
        return await search(self._readers, "profiles", tenant, request, decode_profile)

    async def owners(self, tenant: str, digests: Sequence[str]) -> dict[str, str]:
        if not digests:
            return {}
        wanted = encode(list(dict.fromkeys(digests)))

        def query(connection: sqlite3.Connection) -> dict[str, str]:
            rows = connection.execute(
                "SELECT digest, profile_id FROM identities WHERE tenant = ?"
                " AND digest IN (SELECT value FROM json_each(?))",
                (tenant, wanted),
            )
            return {digest: profile_id for digest, profile_id in rows}

        return await self._readers.run(query)

    async def retired(self, tenant: str, profile_id: str) -> RetiredProfile | None:
        def query(connection: sqlite3.Connection) -> tuple[str, str] | None:
            row = connection.execute(
                "SELECT survivor_id, doc FROM retired_profiles WHERE tenant = ? AND id = ?",
                (tenant, profile_id),
            ).fetchone()
            return (row[0], row[1]) if row else None

        found = await self._readers.run(query)
        if found is None:
            return None
        return RetiredProfile(profile=decode_profile(found[1]), survivor_id=found[0])

    async def get(self, tenant: str, profile_id: str) -> Profile | None:
        # The profile that lists the id among its ids (it took it over in a merge) first, else
        # the one with the id: one statement, two index lookups.
        def query(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT doc FROM (SELECT p.doc, 0 AS taken FROM profile_aliases a JOIN"
                " profiles p ON p.tenant = a.tenant AND p.id = a.profile_id"
                " WHERE a.tenant = ?1 AND a.alias = ?2"
                " UNION ALL SELECT doc, 1 FROM profiles WHERE tenant = ?1 AND id = ?2)"
                " ORDER BY taken LIMIT 1",
                (tenant, profile_id),
            ).fetchone()
            return row[0] if row else None

        doc = await self._readers.run(query)
        return decode_profile(doc) if doc is not None else None


# One page of _keyset_pages: (tenant, ids as JSON, key, tiebreak, limit) → (key, tiebreak,
# doc) in descending (key, tiebreak) order.
_EVENT_PAGE = (
    "SELECT time, rowid, doc FROM events WHERE tenant = ?"
    " AND profile_id IN (SELECT value FROM json_each(?)) AND (time, rowid) < (?, ?)"
    " ORDER BY time DESC, rowid DESC LIMIT ?"
)
_SESSION_PAGE = (
    "SELECT updated, id, doc FROM sessions INDEXED BY sessions_by_profile"
    " WHERE tenant = ? AND profile_id IN (SELECT value FROM json_each(?))"
    " AND (updated, id) < (?, ?) ORDER BY updated DESC, id DESC LIMIT ?"
)


async def _keyset_pages(
    readers: ReaderPool,
    sql: str,
    tenant: str,
    profile_ids: Sequence[str],
    page_size: int,
    decode: Callable[[str], T],
) -> AsyncIterator[list[T]]:
    """The records `sql` selects, page by page, each page starting after the last one's
    (key, tiebreak): records stored meanwhile never shift a page, so none comes twice."""
    ids = encode(list(dict.fromkeys(profile_ids)))
    # Every stored key is finite, so (key, tiebreak) < (inf, "") holds for every row.
    after: tuple[object, object] = (math.inf, "")
    while True:

        def page(connection: sqlite3.Connection, after: tuple[object, object] = after) -> list[Row]:
            rows: list[Row] = connection.execute(sql, (tenant, ids, *after, page_size)).fetchall()
            return rows

        rows = await readers.run(page)
        if rows:
            yield [decode(row[2]) for row in rows]
        if len(rows) < page_size:
            return
        after = (rows[-1][0], rows[-1][1])
