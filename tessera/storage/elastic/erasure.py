"""Erasing a person: every document about their ids, in every kind of index.

Done as "search, then bulk delete what was found, until nothing is found", not with
`_delete_by_query`: that API lives in Elasticsearch's `reindex` module, which not every
distribution ships (the minimal one the tests run on has none), and a privacy erasure must not
depend on an optional module. The tenant's indices are refreshed first, so the searches see
every write acknowledged before the erasure, and every delete request refreshes, so a search
never finds again what was just deleted.

The profile's deletes carry its version (the fencing token of the eraser's lock, see
``ChangeSet.versions``): the deleted document's tombstone then refuses a write of the profile
by an earlier lock holder that Elasticsearch applies late (for `index.gc_deletes`, 60 s by
default, after which Elasticsearch forgets tombstones). Sessions and events are deleted
unversioned: the eraser holds no lock of the sessions.

A delete refused because a reshard is moving the partition (write block) raises
PartitionMoving: the erasure must not skip it (the copy would bring the person back), so the
writer plans the change set again once the partition has moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from elasticsearch import AsyncElasticsearch

from tessera.errors import StorageUnavailable
from tessera.storage.elastic.bulk import Operation, PartitionMoving, Refresh, Retrier, send
from tessera.storage.elastic.naming import Names
from tessera.storage.elastic.reads import complete_search
from tessera.storage.ports import Erasure

# Documents deleted per round.
ROUND = 1000


async def erase(
    client: AsyncElasticsearch,
    names: Names,
    erasure: Erasure,
    versions: Mapping[tuple[str, str, str], int],
    *,
    refresh: Refresh,
    retrier: Retrier,
) -> None:
    tenant, ids = erasure.tenant, list(dict.fromkeys(erasure.profile_ids))
    if not ids:
        return
    await retrier.call(
        "refresh before an erasure",
        lambda: client.indices.refresh(
            index=names.tenant_indices(tenant), ignore_unavailable=True, allow_no_indices=True
        ),
    )
    targets: list[tuple[str, dict[str, Any]]] = [
        (names.single_index(tenant, "identity"), {"terms": {"profile_id": ids}}),
        (names.single_index(tenant, "retired"), {"ids": {"values": ids}}),
        (names.alias(tenant, "profile"), {"ids": {"values": ids}}),
    ]
    if not erasure.keep_records:
        targets += [
            (names.alias(tenant, "session"), {"terms": {"profile.id": ids}}),
            (names.alias(tenant, "event"), {"terms": {"profile.id": ids}}),
        ]
    profile_alias = names.alias(tenant, "profile")
    profile_versions = {
        record_id: version
        for (kind, owner, record_id), version in versions.items()
        if kind == "profile" and owner == tenant
    }
    for index, query in targets:
        # Only the profiles' deletes are versioned (ids are unique per kind only).
        own = profile_versions if index == profile_alias else {}
        await _delete_matching(client, index, query, own, refresh=refresh, retrier=retrier)


async def _delete_matching(
    client: AsyncElasticsearch,
    index: str,
    query: dict[str, Any],
    versions: Mapping[str, int],
    *,
    refresh: Refresh,
    retrier: Retrier,
) -> None:
    while True:
        # Whole or StorageUnavailable (reads.py): an erasure that skipped a closed partition
        # would report the person erased while their records stay.
        answer = await complete_search(
            client,
            f"finding what to erase in {index}",
            index=index,
            retrier=retrier,
            query=query,
            size=ROUND,
            source=False,
        )
        hits = answer["hits"]["hits"]
        if not hits:
            return
        deletes = [
            Operation(0, "delete", hit["_index"], hit["_id"], version=versions.get(hit["_id"]))
            for hit in hits
        ]
        # Either refresh makes the deletes visible before it answers: the next round's
        # search does not find them again.
        blocked: set[int] = set()
        failures = await send(client, deletes, refresh=refresh, retrier=retrier, blocked=blocked)
        if blocked:
            raise PartitionMoving(f"Elasticsearch: erasing in {index}: {failures[0]}")
        if failures:
            raise StorageUnavailable(f"Elasticsearch: erasing in {index} failed: {failures[0]}")
        if len(hits) < ROUND:
            return
