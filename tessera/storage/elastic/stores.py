"""Read side of the Elasticsearch record store: events, sessions and profiles.

Reads by id are realtime multi-gets into the partitions that can hold the record (homes.py):
they see every acknowledged write at once, with no refresh. Searches (conditions, listings,
exports) go through the tenant's alias (`<prefix>.<tenant>.event`, over every partition) and
see what the last refresh made visible: up to the kind's ELASTIC_*_REFRESH_INTERVAL behind the
writes (docs/distributed.md, "Read your writes"). Identity links, profile aliases and retired
profiles live in one index per tenant under their own id, read with realtime GET/mget too.

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

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.storage.elastic.codec import R, decode
from tessera.storage.elastic.fields import SEARCH_FIELDS
from tessera.storage.elastic.homes import ById, Copy, alias_key, pick
from tessera.storage.elastic.naming import Names, generation_of
from tessera.storage.elastic.query import every_page, search_page, sort_clause, to_query
from tessera.storage.elastic.reads import complete_refresh, found_documents, reads_elastic
from tessera.storage.ports import Page, RetiredProfile, SearchPage
from tessera.storage.search import SearchRequest

NO_SX = {"excludes": list(SEARCH_FIELDS)}
# Ids followed from a merged-away id to the profile that has it now (merges of merges).
MAX_HOPS = 8
# Records per page when reading all of a person's events or sessions (export); at most
# Elasticsearch's result window (query.RESULT_WINDOW).
EXPORT_PAGE_SIZE = 1000


class ElasticEventStore:
    def __init__(
        self,
        client: AsyncElasticsearch,
        names: Names,
        by_id: ById,
        *,
        page_size: int = EXPORT_PAGE_SIZE,
    ) -> None:
        self._client = client
        self._names = names
        self._by_id = by_id
        self._page_size = page_size

    @reads_elastic
    async def get(
        self, tenant: str, event_id: str, *, moment: datetime | None = None
    ) -> Event | None:
        if moment is not None:
            placed = [(event_id, moment)]
            found = await self._by_id.at_moments(tenant, "event", placed)
        else:
            found, _ = await self._by_id.copies(tenant, "event", [event_id])
        copies = found.get(event_id)
        if not copies:
            return None
        # Should an id ever be stored twice (two times, two partitions), the first is the event.
        first = min(copies, key=lambda copy: str(copy.source["metadata"].get("insert") or ""))
        return decode(first.source, Event)

    @reads_elastic
    async def existing_ids(
        self,
        tenant: str,
        event_ids: Sequence[str],
        *,
        moments: Mapping[str, datetime] | None = None,
    ) -> set[str]:
        wanted = list(dict.fromkeys(event_ids))
        placed = moments or {}
        at_moments = [(i, placed[i]) for i in wanted if i in placed]
        anywhere = [i for i in wanted if i not in placed]
        found: set[str] = set()
        if at_moments:
            found |= set(await self._by_id.at_moments(tenant, "event", at_moments))
        if anywhere:  # in chunks of multi-gets (homes.MGET_CHUNK)
            copies, _ = await self._by_id.copies(tenant, "event", anywhere)
            found |= set(copies)
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
        fresh: bool = False,
    ) -> Page[Event]:
        ids = list(dict.fromkeys(profile_ids))
        if not ids:
            return Page(total=0, items=[])
        if fresh:  # a recount (unmerge): every event stored so far must count
            await complete_refresh(self._client, self._names.alias(tenant, "event"))
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
        self,
        client: AsyncElasticsearch,
        names: Names,
        by_id: ById,
        *,
        page_size: int = EXPORT_PAGE_SIZE,
    ) -> None:
        self._client = client
        self._names = names
        self._by_id = by_id
        self._page_size = page_size

    @reads_elastic
    async def get(self, tenant: str, session_id: str) -> Session | None:
        copy = await self._by_id.get(tenant, "session", session_id)
        if copy is None:
            return None
        session = decode(copy.source, Session)
        session.metadata.partition = copy.partition
        return session

    @reads_elastic
    async def for_profiles(
        self,
        tenant: str,
        profile_ids: Sequence[str],
        *,
        limit: int = 100,
        offset: int = 0,
        fresh: bool = False,
    ) -> Page[Session]:
        ids = list(dict.fromkeys(profile_ids))
        if not ids:
            return Page(total=0, items=[])
        if fresh:
            # A merge recounts the person's visits from their sessions: every session stored
            # so far must count, not only those the last scheduled refresh made searchable.
            await complete_refresh(self._client, self._names.alias(tenant, "session"))
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
    def __init__(self, client: AsyncElasticsearch, names: Names, by_id: ById) -> None:
        self._client = client
        self._names = names
        self._by_id = by_id

    @reads_elastic
    async def get(self, tenant: str, profile_id: str) -> Profile | None:
        """The profile of this id, else the one listing it in its `ids` (a merge took the
        id over, or async intake promised it): read by id only, realtime, no search.

        One multi-get asks the id's partitions, its entry in the retired profiles (a merge's
        loser: which profile survived it) and its link in the identity index (writer.py,
        _alias_links); a link is followed to a profile that lists the id, over merges of
        merges."""
        followed: set[str] = set()
        wanted = profile_id
        for _hop in range(MAX_HOPS):
            followed.add(wanted)
            retired_at = (self._names.single_index(tenant, "retired"), wanted)
            link_at = (self._names.single_index(tenant, "identity"), alias_key(wanted))
            found, extra = await self._by_id.copies(
                tenant, "profile", [wanted], also=[retired_at, link_at]
            )
            copies = found.get(wanted)
            own = _profile(pick(copies)) if copies else None
            retired, link = extra.get(retired_at), extra.get(link_at)
            taker = (retired or {}).get("survivor_id") or (link or {}).get("profile_id")
            if taker is not None and taker not in followed:
                if own is None:
                    wanted = str(taker)
                    continue
                # Merged away, and still stored: the merge's commit is under way or was cut
                # short before its last phase (writer.py). The survivor is the profile once
                # it lists the id (phase 2 stored it); until then this one still is.
                survivor = await self._own(tenant, str(taker))
                if survivor is not None and wanted in survivor.ids:
                    own = survivor
            if own is None or (own.id != profile_id and profile_id not in own.ids):
                return None
            return own
        return None

    async def _own(self, tenant: str, profile_id: str) -> Profile | None:
        copy = await self._by_id.get(tenant, "profile", profile_id)
        return _profile(copy) if copy is not None else None

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
    # An export (a person's request for their data) is whole: what was stored a moment ago,
    # not yet refreshed, is in it too.
    await complete_refresh(client, alias)
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


def _profile(copy: Copy) -> Profile:
    profile = decode(copy.source, Profile)
    profile.metadata.partition = copy.partition
    return profile


def newest_copies(hits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each id once, at its first place, as its copy in the newest generation."""
    chosen: dict[str, dict[str, Any]] = {}
    for hit in hits:
        seen = chosen.get(hit["_id"])
        if seen is None or generation_of(hit["_index"]) > generation_of(seen["_index"]):
            chosen[hit["_id"]] = hit
    return list(chosen.values())
