"""Read side of the Elasticsearch record store: events, sessions and profiles.

Reads of a kind go through the tenant's alias (`<prefix>.<tenant>.event`, over every
partition). A record is found by id with an `ids` search on the alias, not with a GET: a GET
needs the concrete index, and the id alone does not tell which partition holds the record
(that depends on a time inside it). The search sees every committed record because the writer
refreshes each bulk before it acknowledges it (writer.py). Identity links and retired
profiles live in one index per tenant under their own id, so they are read with realtime
GET/mget, which sees a write even before any refresh.

A tenant that has written nothing has no indices: every read answers "nothing" then. Every
other read is whole or fails (reads.py): a closed partition or a shard that cannot be read
makes the read a StorageUnavailable (503), never an answer made of the rest.

While a reshard moves a partition (reshard.py), a record updated during that time has a copy
in both generations: the frozen old one and the newer one the writer wrote. Reads keep, per
id, the copy of the newest generation: `get` picks it, a search page lists each id once (at
its first place). Such a record may still be counted twice in a search's `total`, and could
show on two pages of a long listing, for as long as its partition is being copied (see
reshard.py for how long that is).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.storage.elastic.codec import R, decode
from tessera.storage.elastic.fields import SEARCH_FIELDS
from tessera.storage.elastic.naming import Names, generation_of
from tessera.storage.elastic.query import every_page, search_page, sort_clause, to_query
from tessera.storage.elastic.reads import complete_search, found_documents, reads_elastic
from tessera.storage.ports import Page, RetiredProfile, SearchPage
from tessera.storage.search import SearchRequest

# Ids per `ids` query when asking which events exist.
IDS_PER_QUERY = 1000
NO_SX = {"excludes": list(SEARCH_FIELDS)}
# Copies of one id a read may meet: one per generation while a partition moves.
COPIES = 4
# Records per page when reading all of a person's events or sessions (export); at most
# Elasticsearch's result window (query.RESULT_WINDOW).
EXPORT_PAGE_SIZE = 1000


class ElasticEventStore:
    def __init__(
        self, client: AsyncElasticsearch, names: Names, *, page_size: int = EXPORT_PAGE_SIZE
    ) -> None:
        self._client = client
        self._names = names
        self._page_size = page_size

    @reads_elastic
    async def get(self, tenant: str, event_id: str) -> Event | None:
        answer = await complete_search(
            self._client,
            "reading an event",
            index=self._names.alias(tenant, "event"),
            query={"ids": {"values": [event_id]}},
            # Should an id ever be stored twice, the first stored is the event.
            sort=[{"metadata.insert": "asc"}],
            size=1,
            source=NO_SX,
        )
        hits = answer["hits"]["hits"]
        return decode(hits[0]["_source"], Event) if hits else None

    @reads_elastic
    async def existing_ids(self, tenant: str, event_ids: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(event_ids))
        found: set[str] = set()
        for start in range(0, len(wanted), IDS_PER_QUERY):
            chunk = wanted[start : start + IDS_PER_QUERY]
            answer = await complete_search(
                self._client,
                "looking up stored events",
                index=self._names.alias(tenant, "event"),
                query={"ids": {"values": chunk}},
                size=2 * len(chunk),
                source=False,
            )
            found.update(hit["_id"] for hit in answer["hits"]["hits"])
        return found

    @reads_elastic
    async def search(self, tenant: str, request: SearchRequest) -> SearchPage[Event]:
        query = to_query(request.condition, "event")
        return await _search(
            self._client, self._names.alias(tenant, "event"), request, query, "time", Event
        )

    @reads_elastic
    async def for_profiles(
        self,
        tenant: str,
        profile_ids: Sequence[str],
        *,
        event_type: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> Page[Event]:
        ids = list(dict.fromkeys(profile_ids))
        if not ids:
            return Page(total=0, items=[])
        filters: list[dict[str, Any]] = [{"terms": {"profile.id": ids}}]
        if event_type is not None:
            filters.append({"term": {"type": event_type}})
        page = await _search(
            self._client,
            self._names.alias(tenant, "event"),
            SearchRequest(condition=None, limit=limit, offset=offset),
            {"bool": {"filter": filters}},
            "time",
            Event,
        )
        return Page(total=page.total, items=page.items)

    def pages_for_profiles(
        self, tenant: str, profile_ids: Sequence[str]
    ) -> AsyncIterator[list[Event]]:
        alias = self._names.alias(tenant, "event")
        return _every_record(self._client, alias, profile_ids, "time", self._page_size, Event)


class ElasticSessionStore:
    def __init__(
        self, client: AsyncElasticsearch, names: Names, *, page_size: int = EXPORT_PAGE_SIZE
    ) -> None:
        self._client = client
        self._names = names
        self._page_size = page_size

    @reads_elastic
    async def get(self, tenant: str, session_id: str) -> Session | None:
        answer = await complete_search(
            self._client,
            "reading a session",
            index=self._names.alias(tenant, "session"),
            query={"ids": {"values": [session_id]}},
            size=COPIES,
            source=NO_SX,
        )
        hits = newest_copies(answer["hits"]["hits"])
        return decode(hits[0]["_source"], Session) if hits else None

    @reads_elastic
    async def for_profiles(
        self, tenant: str, profile_ids: Sequence[str], *, limit: int = 100, offset: int = 0
    ) -> Page[Session]:
        ids = list(dict.fromkeys(profile_ids))
        if not ids:
            return Page(total=0, items=[])
        page = await _search(
            self._client,
            self._names.alias(tenant, "session"),
            SearchRequest(condition=None, limit=limit, offset=offset),
            {"bool": {"filter": [{"terms": {"profile.id": ids}}]}},
            "metadata.time.update",
            Session,
        )
        return Page(total=page.total, items=page.items)

    def pages_for_profiles(
        self, tenant: str, profile_ids: Sequence[str]
    ) -> AsyncIterator[list[Session]]:
        alias = self._names.alias(tenant, "session")
        return _every_record(
            self._client, alias, profile_ids, "metadata.time.update", self._page_size, Session
        )


class ElasticProfileStore:
    def __init__(self, client: AsyncElasticsearch, names: Names) -> None:
        self._client = client
        self._names = names

    @reads_elastic
    async def get(self, tenant: str, profile_id: str) -> Profile | None:
        # The profile with this id, else the one listing it in `ids`: one search finds both.
        answer = await complete_search(
            self._client,
            "reading a profile",
            index=self._names.alias(tenant, "profile"),
            query={
                "bool": {
                    "should": [
                        {"ids": {"values": [profile_id]}},
                        {"term": {"ids": profile_id}},
                    ],
                    "minimum_should_match": 1,
                }
            },
            sort=[{"metadata.time.update": "desc"}, {"id": "asc"}],
            size=10,
            source=NO_SX,
        )
        hits = newest_copies(answer["hits"]["hits"])
        # Another profile listing the id in its `ids` took it over in a merge. Normally the
        # merged-away one is gone by then; it is still there only when the merge's commit was
        # cut short after the survivor was written (writer.py, phase 3), and then the survivor
        # is the profile: a request must change it, not the one about to be retired.
        others = [hit for hit in hits if hit["_id"] != profile_id]
        own = [hit for hit in hits if hit["_id"] == profile_id]
        chosen = others[0] if others else own[0] if own else None
        return decode(chosen["_source"], Profile) if chosen is not None else None

    @reads_elastic
    async def search(self, tenant: str, request: SearchRequest) -> SearchPage[Profile]:
        query = to_query(request.condition, "profile")
        alias = self._names.alias(tenant, "profile")
        return await _search(self._client, alias, request, query, "metadata.time.update", Profile)

    @reads_elastic
    async def owners(self, tenant: str, digests: Sequence[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return {}
        try:
            answer = await self._client.mget(
                index=self._names.single_index(tenant, "identity"), ids=wanted
            )
        except NotFoundError:
            return {}  # no identity index yet: nothing was ever linked
        found = found_documents(answer.body, "reading identity links")
        return {doc["_id"]: doc["_source"]["profile_id"] for doc in found}

    @reads_elastic
    async def retired(self, tenant: str, profile_id: str) -> RetiredProfile | None:
        try:
            answer = await self._client.get(
                index=self._names.single_index(tenant, "retired"), id=profile_id
            )
        except NotFoundError:
            return None  # no such document, or no retired index yet
        source = answer["_source"]
        return RetiredProfile(
            profile=decode(source["profile"], Profile), survivor_id=source["survivor_id"]
        )


async def _search(
    client: AsyncElasticsearch,
    alias: str,
    request: SearchRequest,
    query: dict[str, Any],
    moment_field: str,
    kind: Any,
) -> SearchPage[Any]:
    page = await search_page(
        client, alias, request, query=query, moment_field=moment_field, id_field="id"
    )
    items = [decode(hit["_source"], kind) for hit in newest_copies(page.items)]
    return SearchPage(total=page.total, items=items, next_cursor=page.next_cursor)


async def _every_record(
    client: AsyncElasticsearch,
    alias: str,
    profile_ids: Sequence[str],
    moment_field: str,
    page_size: int,
    kind: type[R],
) -> AsyncIterator[list[R]]:
    """Every record of these profile ids, newest first, a page at a time, from one point in
    time. A record with copies in two generations (a reshard moving it) comes once, at its
    first place, as the copy of that page's newest generation."""
    ids = list(dict.fromkeys(profile_ids))
    if not ids:
        return
    given: set[str] = set()
    pages = every_page(
        client,
        alias,
        {"bool": {"filter": [{"terms": {"profile.id": ids}}]}},
        sort_clause(None, moment_field=moment_field, id_field="id"),
        page_size=page_size,
        source=NO_SX,
    )
    async for hits in pages:
        fresh = [hit for hit in newest_copies(hits) if hit["_id"] not in given]
        given.update(hit["_id"] for hit in fresh)
        if fresh:
            yield [decode(hit["_source"], kind) for hit in fresh]


def newest_copies(hits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each id once, at its first place, as its copy in the newest generation."""
    chosen: dict[str, dict[str, Any]] = {}
    for hit in hits:
        seen = chosen.get(hit["_id"])
        if seen is None or generation_of(hit["_index"]) > generation_of(seen["_index"]):
            chosen[hit["_id"]] = hit
    return list(chosen.values())
