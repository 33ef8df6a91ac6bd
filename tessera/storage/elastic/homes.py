"""Records by id without a search: realtime multi-gets into the partitions that can hold them.

A search sees only what a refresh has made visible; a GET or multi-get by id sees every
acknowledged write at once. The writer no longer refreshes what it writes (writer.py), so every
read the hot path decides on — does this session exist, what does this profile hold now, is this
event stored — is a multi-get by id:

- A profile or session lives in one partition, its *home*, chosen at its first write and kept
  in the record (`metadata.partition`). Whoever holds the record (the cache, a request) knows
  where to write it. Whoever has only the id asks every partition of the kind at once: one
  multi-get with one entry per partition (a handful: profiles and sessions are cut by month or
  coarser in any sensible installation; days work too, at more entries per read).
- The partitions behind a tenant's alias are listed with `GET _alias` (cluster state, no shard
  is searched) and the list is kept for LIST_TTL_S. A partition another process created since
  is not asked until then, so a record written there in that time is not found. On the live
  path that does not happen: the partitions of now and of the near future are created ahead of
  time (partitions_ahead.py), long before any record goes there. What is left is a partition
  created on demand (a history import into past months, a reshard's new generation) read by
  another process within LIST_TTL_S of its creation (docs/distributed.md, "Read your writes").
  A partition the list names but that is gone (retention; a reshard swapped it out) answers
  "index not found": the list is read again and the read made again, once.
- Events are never read by id on the hot path except to tell whether they are stored, and an
  event's partition follows from its time (writer.partition_moment): one entry per event, in
  the listed partitions whose time range holds it.

Every multi-get is whole or fails (reads.found_documents): a closed partition or a shard that
cannot be read is a StorageUnavailable (503), never "not found". A partition deleted between
the listing and the read (retention) answers "index not found" for its entries: what it held
is gone, so that is "not found" indeed.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from elasticsearch import AsyncElasticsearch, NotFoundError

from tessera.storage.elastic.inventory import KnownIndex, recognise
from tessera.storage.elastic.naming import Names, generation_of
from tessera.storage.elastic.reads import Answer, attempt, found_documents, never_created
from tessera.storage.elastic.wire import ElasticWire

# How long a listing of a tenant's partitions is used before it is read again (see above).
LIST_TTL_S: Final = 5.0
# Entries per multi-get request (each entry is a realtime get on one shard).
MGET_CHUNK: Final = 2000
_NOT_FOUND: Final = "index_not_found_exception"
_SUFFIX: Final = re.compile(r"\.v[1-9][0-9]*-([0-9a-z-]+)$")


@dataclass(frozen=True, slots=True)
class Copy:
    """One stored copy of a record: where it is and what it says."""

    index: str
    source: Answer

    @property
    def partition(self) -> str | None:
        return suffix_of(self.index)


def alias_key(profile_id: str) -> str:
    """The id, in the tenant's identity index, of the link from another id a profile lists
    (a merged-away profile's, the id async intake promised) to the profile (writer.py,
    _alias_links). Merge-key links are hex digests: no clash."""
    return "id:" + profile_id


def suffix_of(index: str) -> str | None:
    """The partition suffix in an index name (`….profile.v2-2026-12` → `2026-12`)."""
    found = _SUFFIX.search(index)
    return found[1] if found else None


def pick(copies: Sequence[Copy]) -> Copy:
    """The record among its copies: the newest generation's (a reshard moving it), then the
    most recently changed (a stray copy an older version of Tessera left in a second
    partition)."""

    def rank(copy: Copy) -> tuple[int, str]:
        updated = ((copy.source.get("metadata") or {}).get("time") or {}).get("update")
        return generation_of(copy.index), str(updated or "")

    return max(copies, key=rank)


@dataclass(slots=True)
class _Listing:
    read_at: float
    indices: tuple[KnownIndex, ...]


class Partitions:
    """The partitions behind each tenant's alias of each kind, as this process last listed
    them; one listing at a time per alias, shared by every reader waiting for it."""

    def __init__(self, client: AsyncElasticsearch, names: Names, ttl_s: float = LIST_TTL_S):
        self._client = client
        self._names = names
        self._ttl_s = ttl_s
        self._known: dict[tuple[str, str], _Listing] = {}
        self._listing: dict[tuple[str, str], asyncio.Task[tuple[KnownIndex, ...]]] = {}

    async def of(self, tenant: str, kind: str) -> tuple[KnownIndex, ...]:
        key = (tenant, kind)
        known = self._known.get(key)
        if known is not None and time.monotonic() - known.read_at < self._ttl_s:
            return known.indices
        task = self._listing.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._list(tenant, kind))
            self._listing[key] = task
            task.add_done_callback(lambda _: self._listing.pop(key, None))
        return await asyncio.shield(task)

    def forget(self, tenant: str | None = None) -> None:
        """List again at the next read (a partition was created or deleted)."""
        if tenant is None:
            self._known.clear()
        else:
            for key in [key for key in self._known if key[0] == tenant]:
                del self._known[key]

    def missing(self, tenant: str, kind: str, index: str) -> bool:
        """Whether the kept listing of the tenant's partitions of ``kind`` lacks ``index``
        (a write just created it). No kept listing lacks anything: the next read lists."""
        known = self._known.get((tenant, kind))
        return known is not None and all(i.name != index for i in known.indices)

    def forget_kind(self, tenant: str, kind: str) -> None:
        """List the tenant's partitions of ``kind`` again at the next read."""
        self._known.pop((tenant, kind), None)

    async def _list(self, tenant: str, kind: str) -> tuple[KnownIndex, ...]:
        alias = self._names.alias(tenant, kind)
        sent_at = time.monotonic()

        async def once() -> tuple[KnownIndex, ...]:
            try:
                answer = await self._client.indices.get_alias(name=alias)
            except NotFoundError as exc:
                if never_created(exc, alias) or _no_such_alias(exc):
                    return ()  # nothing stored for the tenant yet
                raise
            found = (recognise(self._names, index) for index in answer.body)
            return tuple(sorted((i for i in found if i is not None and i.kind == kind), key=_name))

        indices = await attempt(f"listing the {kind} partitions", None, once)
        self._known[(tenant, kind)] = _Listing(sent_at, indices)
        return indices


def _name(index: KnownIndex) -> str:
    return index.name


def _no_such_alias(exc: NotFoundError) -> bool:
    # `GET _alias/<name>` of an alias that does not exist answers 404 with an `error` string.
    body = exc.body if isinstance(exc.body, dict) else {}
    return isinstance(body.get("error"), str) and "missing" in body["error"]


class _Gone(Exception):
    """A listed partition no longer exists: list again."""


class ById:
    """Realtime multi-gets of records by id over the partitions that can hold them."""

    def __init__(
        self, client: AsyncElasticsearch, partitions: Partitions, wire: ElasticWire | None = None
    ) -> None:
        self._client = client
        self.partitions = partitions
        # The multi-gets go out over the lean connections when given (wire.py).
        self._wire = wire

    async def copies(
        self, tenant: str, kind: str, ids: Iterable[str], *, also: Sequence[tuple[str, str]] = ()
    ) -> tuple[dict[str, list[Copy]], dict[tuple[str, str], Answer]]:
        """Every stored copy of these records, by id (any partition of the kind); and what
        ``also`` (pairs of a single index and a document id, read in the same request) found,
        by pair."""
        wanted = list(dict.fromkeys(ids))

        def pairs(indices: Sequence[KnownIndex]) -> list[tuple[str, str]]:
            return [(index.name, doc_id) for doc_id in wanted for index in indices]

        return await self._listed(tenant, kind, pairs, also)

    async def get(self, tenant: str, kind: str, record_id: str) -> Copy | None:
        found, _ = await self.copies(tenant, kind, [record_id])
        copies = found.get(record_id)
        return pick(copies) if copies else None

    async def at_moments(
        self, tenant: str, kind: str, wanted: Sequence[tuple[str, datetime]]
    ) -> dict[str, list[Copy]]:
        """The copies of records whose partition follows from a moment: (id, moment) pairs,
        each asked in the listed partitions whose time range holds its moment."""

        def pairs(indices: Sequence[KnownIndex]) -> list[tuple[str, str]]:
            return [
                (index.name, doc_id)
                for doc_id, moment in wanted
                for index in indices
                if index.range is not None and index.range.start <= moment < index.range.end
            ]

        found, _ = await self._listed(tenant, kind, pairs, ())
        return found

    async def _listed(
        self,
        tenant: str,
        kind: str,
        pairs: Callable[[Sequence[KnownIndex]], list[tuple[str, str]]],
        also: Sequence[tuple[str, str]],
    ) -> tuple[dict[str, list[Copy]], dict[tuple[str, str], Answer]]:
        """A multi-get of the (index, id) pairs ``pairs`` makes of the listed partitions; once
        more with a fresh listing when a listed partition is gone (see the module)."""
        for last_try in (False, True):
            indices = await self.partitions.of(tenant, kind)
            try:
                return await self._mget(pairs(indices), also, strict=not last_try)
            except _Gone:
                self.partitions.forget(tenant)
        raise AssertionError("unreachable: the last try does not raise _Gone")

    async def _mget(
        self, pairs: Sequence[tuple[str, str]], also: Sequence[tuple[str, str]], *, strict: bool
    ) -> tuple[dict[str, list[Copy]], dict[tuple[str, str], Answer]]:
        found: dict[str, list[Copy]] = {}
        extra: dict[tuple[str, str], Answer] = {}
        singles = set(also)
        every = [*pairs, *also]
        for start in range(0, len(every), MGET_CHUNK):
            chunk = every[start : start + MGET_CHUNK]
            docs: list[dict[str, Any]] = [{"_index": i, "_id": d} for i, d in chunk]

            async def once(
                docs: list[dict[str, Any]] = docs,
            ) -> tuple[Answer, list[Answer]]:
                if self._wire is not None:
                    body: Answer = await self._wire.mget(docs, realtime=True)
                else:
                    body = (await self._client.mget(docs=docs, realtime=True)).body
                # Checked here, so that a shard still starting is tried again (attempt).
                return body, found_documents(body, "reading records by id")

            answer, documents = await attempt("reading records by id", None, once)
            if strict and any(
                _error_type(doc) == _NOT_FOUND and (doc["_index"], doc["_id"]) not in singles
                for doc in answer.get("docs") or []
            ):
                raise _Gone()
            for doc in documents:
                pair = (doc["_index"], doc["_id"])
                if pair in singles:
                    extra[pair] = doc["_source"]
                else:
                    found.setdefault(doc["_id"], []).append(Copy(doc["_index"], doc["_source"]))
        return found, extra


def _error_type(doc: Answer) -> str | None:
    error = doc.get("error")
    if isinstance(error, dict):
        kind = error.get("type")
        return str(kind) if kind is not None else None
    return None
