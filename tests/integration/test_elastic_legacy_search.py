"""A partition of the earlier search representation (the nested `sx` field) on the real cluster.

An installation upgraded in place keeps the partitions it has, with their old mapping. Their
documents have no search terms, so a condition over them would silently miss them: the search
is refused (503, naming the partitions and `tessera reshard`) until a reshard re-encodes them,
while reads by id and plain listings go on. After the reshard the same condition finds them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tessera.doctor.elastic import search_representation
from tessera.doctor.report import Status
from tessera.query import parse
from tessera.storage.elastic.backend import ElasticRecordBackend
from tessera.storage.elastic.codec import plain
from tessera.storage.elastic.fields import LEGACY_FIELD, SEARCH_FIELDS
from tessera.storage.elastic.legacy import SearchNeedsReshard, legacy_partitions
from tessera.storage.elastic.mappings import MOVED_FIELD, PROFILE
from tessera.storage.elastic.reshard import reshard
from tessera.storage.elastic.schema import IndexShape
from tessera.storage.ports import ChangeSet
from tessera.storage.search import SearchRequest, SortKey
from tests.contract.test_record_stores import make_profile
from tests.support.elastic import drop_created_prefixes, make_backend, require_elastic

TENANT = "acme"
PROFILES = 8

# The profile mapping of the version before the lean representation: one nested field.
OLD_NESTED = {
    "type": "nested",
    "properties": {
        "p": {"type": "keyword"},
        "k": {"type": "keyword"},
        "b": {"type": "boolean"},
        "n": {"type": "double"},
        "r": {"type": "long"},
        "s": {"type": "keyword"},
    },
}


def _old_mapping() -> dict[str, Any]:
    mapping = copy.deepcopy(PROFILE)
    for name in SEARCH_FIELDS:
        del mapping["properties"][name]
    mapping["properties"][LEGACY_FIELD] = OLD_NESTED
    mapping["_source"] = {"excludes": [LEGACY_FIELD, MOVED_FIELD]}
    return mapping


async def _install_old_partition(backend: ElasticRecordBackend) -> str:
    """Profiles as the earlier version stored them: its mapping, `sx` entries, no terms."""
    profiles = [make_profile(f"p-{n}", tenant=TENANT, traits={"level": n}) for n in range(PROFILES)]
    await backend.writer.commit(ChangeSet(profiles=profiles))
    alias = backend.names.alias(TENANT, "profile")
    answer = await backend.client.search(index=alias, query={"ids": {"values": ["p-0"]}})
    index: str = answer["hits"]["hits"][0]["_index"]
    client = backend.client
    await client.indices.delete(index=index)
    await client.indices.create(
        index=index,
        mappings=_old_mapping(),
        settings={"number_of_shards": 1, "number_of_replicas": 0},
        aliases={backend.names.alias(TENANT, "profile"): {}},
    )
    lines = []
    for profile in profiles:
        document = msgspec.to_builtins(profile)
        level = profile.traits["level"]
        document[LEGACY_FIELD] = [
            {"p": "traits", "k": "object"},
            {"p": "traits.level", "k": "number", "n": float(level), "r": 0},
        ]
        lines.append(plain({"index": {"_index": index, "_id": profile.id}}))
        lines.append(plain(document))
    # elasticsearch-py types operations as mappings, yet sends NDJSON bytes as they are.
    body = b"\n".join(lines) + b"\n"
    await client.bulk(operations=body, refresh=True)  # type: ignore[arg-type]
    return index


async def test_old_partitions_are_refused_until_a_reshard_re_encodes_them(
    tmp_path: Path,
) -> None:
    require_elastic()
    backend = make_backend(tmp_path, generation_ttl_s=0.2)
    await backend.start()
    try:
        old = await _install_old_partition(backend)
        alias = backend.names.alias(TENANT, "profile")
        assert await legacy_partitions(backend.client, alias) == [old]
        told = await search_representation(backend)
        assert told.status is Status.WARNING and old in told.detail and "profile" in told.detail
        condition = SearchRequest(condition=parse("profile@traits.level >= 5"), limit=50)
        with pytest.raises(SearchNeedsReshard, match="tessera reshard") as refused:
            await backend.profiles.search(TENANT, condition)
        assert old in str(refused.value) and refused.value.status_code == 503
        sorted_by_level = SearchRequest(
            condition=None, sort=SortKey(("traits", "level"), descending=False), limit=50
        )
        with pytest.raises(SearchNeedsReshard):
            await backend.profiles.search(TENANT, sorted_by_level)
        # What never reads the search fields goes on.
        assert (
            await backend.profiles.search(TENANT, SearchRequest(condition=None, limit=50))
        ).total == 8
        stored = await backend.profiles.get(TENANT, "p-3")
        assert stored is not None and stored.traits == {"level": 3}

        args = (backend.client, backend.names, backend.schema, "profile")
        await reshard(*args, IndexShape(1, 0), settle_s=0.3, grace_s=0.1)

        assert await legacy_partitions(backend.client, alias) == []
        assert (await search_representation(backend)).status is Status.OK
        found = await backend.profiles.search(TENANT, condition)
        assert sorted(p.id for p in found.items) == ["p-5", "p-6", "p-7"]
        ranked = await backend.profiles.search(TENANT, sorted_by_level)
        assert [p.id for p in ranked.items] == [f"p-{n}" for n in range(PROFILES)]
    finally:
        await backend.close()
        drop_created_prefixes()
