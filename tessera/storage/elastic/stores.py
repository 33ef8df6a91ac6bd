"""Read side of the Elasticsearch record store: events, sessions and profiles.

Reads of a kind go through the tenant's alias (`<prefix>.<tenant>.event`, over every
partition). A record is found by id with an `ids` search on the alias, not with a GET: a GET
needs the concrete index, and the id alone does not tell which partition holds the record
(that depends on a time inside it). The search sees every committed record because the writer
refreshes each bulk before it acknowledges it (writer.py). Identity links and retired
profiles live in one index per tenant under their own id, so they are read with realtime
GET/mget, which sees a write even before any refresh.

A tenant that has written nothing has no indices: every read answers "nothing" then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.storage.elastic.codec import decode
from tessera.storage.elastic.fields import SEARCH_FIELD
from tessera.storage.elastic.naming import Names
from tessera.storage.elastic.query import search_page, to_query
from tessera.storage.ports import Page, RetiredProfile, SearchPage
from tessera.storage.search import SearchRequest

# Ids per `ids` query when asking which events exist.
IDS_PER_QUERY = 1000
NO_SX = {"excludes": [SEARCH_FIELD]}


class ElasticEventStore:
    def __init__(self, client: AsyncElasticsearch, names: Names) -> None:
        self._client = client
        self._names = names

    async def get(self, tenant: str, event_id: str) -> Event | None:
        answer = await self._client.search(
            index=self._names.alias(tenant, "event"),
            query={"ids": {"values": [event_id]}},
            # Should an id ever be stored twice, the first stored is the event.
            sort=[{"metadata.insert": "asc"}],
            size=1,
            source=NO_SX,
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        hits = answer["hits"]["hits"]
        return decode(hits[0]["_source"], Event) if hits else None

    async def existing_ids(self, tenant: str, event_ids: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(event_ids))
        found: set[str] = set()
        for start in range(0, len(wanted), IDS_PER_QUERY):
            chunk = wanted[start : start + IDS_PER_QUERY]
            answer = await self._client.search(
                index=self._names.alias(tenant, "event"),
                query={"ids": {"values": chunk}},
                size=2 * len(chunk),
                source=False,
                ignore_unavailable=True,
                allow_no_indices=True,
            )
            found.update(hit["_id"] for hit in answer["hits"]["hits"])
        return found

    async def search(self, tenant: str, request: SearchRequest) -> SearchPage[Event]:
        query = to_query(request.condition, "event")
        return await _search(
            self._client, self._names.alias(tenant, "event"), request, query, "time", Event
        )

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


class ElasticSessionStore:
    def __init__(self, client: AsyncElasticsearch, names: Names) -> None:
        self._client = client
        self._names = names

    async def get(self, tenant: str, session_id: str) -> Session | None:
        answer = await self._client.search(
            index=self._names.alias(tenant, "session"),
            query={"ids": {"values": [session_id]}},
            size=1,
            source=NO_SX,
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        hits = answer["hits"]["hits"]
        return decode(hits[0]["_source"], Session) if hits else None

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


class ElasticProfileStore:
    def __init__(self, client: AsyncElasticsearch, names: Names) -> None:
        self._client = client
        self._names = names

    async def get(self, tenant: str, profile_id: str) -> Profile | None:
        # The profile with this id, else the one listing it in `ids`: one search finds both.
        answer = await self._client.search(
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
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        hits = answer["hits"]["hits"]
        own = [hit for hit in hits if hit["_id"] == profile_id]
        chosen = own[0] if own else hits[0] if hits else None
        return decode(chosen["_source"], Profile) if chosen is not None else None

    async def search(self, tenant: str, request: SearchRequest) -> SearchPage[Profile]:
        query = to_query(request.condition, "profile")
        alias = self._names.alias(tenant, "profile")
        return await _search(self._client, alias, request, query, "metadata.time.update", Profile)

    async def owners(self, tenant: str, digests: Sequence[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return {}
        try:
            answer = await self._client.mget(
                index=self._names.single_index(tenant, "identity"), ids=wanted
            )
        except NotFoundError:
            return {}
        return {
            doc["_id"]: doc["_source"]["profile_id"] for doc in answer["docs"] if doc.get("found")
        }

    async def retired(self, tenant: str, profile_id: str) -> RetiredProfile | None:
        try:
            answer = await self._client.get(
                index=self._names.single_index(tenant, "retired"), id=profile_id
            )
        except NotFoundError:
            return None
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
    try:
        page = await search_page(
            client, alias, request, query=query, moment_field=moment_field, id_field="id"
        )
    except NotFoundError:
        # The tenant's alias does not exist yet: nothing was ever stored for it.
        return SearchPage(total=0, items=[])
    items = [decode(hit["_source"], kind) for hit in page.items]
    return SearchPage(total=page.total, items=items, next_cursor=page.next_cursor)
