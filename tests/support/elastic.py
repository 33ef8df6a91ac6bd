"""The real Elasticsearch the tests use (started by ``bash scripts/services up elasticsearch``).

Every test place gets its own index prefix, ``tt-<digest of the place>``: no index or template
of another test matches it, the first open finds nothing, and opening the same place again
finds the same data (close + reopen). ``drop_created_prefixes`` deletes every index and
template of the prefixes opened; tests/contract/conftest.py runs it after each test. When the
cluster cannot be reached at all, the test is skipped with one line naming it and the error.

``ELASTIC_TEST_URL`` points the tests at another cluster (default http://127.0.0.1:9200).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from tessera.settings import Settings
from tessera.storage.elastic.backend import ElasticRecordBackend
from tessera.storage.elastic.client import ElasticConnection
from tessera.storage.elastic.naming import KINDS, Names, Partitioning
from tessera.storage.elastic.schema import IndexShape
from tests.support.services import service_missing

URL = os.environ.get("ELASTIC_TEST_URL", "http://127.0.0.1:9200")
# One node: a replica could never be assigned, and one shard keeps index creation quick.
TEST_SHAPE = IndexShape(shards=1, replicas=0)

_created: set[str] = set()
_unreachable: list[str] = []


def prefix_for(place: Path) -> str:
    return "tt-" + hashlib.sha256(str(place.resolve()).encode()).hexdigest()[:16]


def claim_prefix(place: Path) -> str:
    """The place's prefix, deleted with everything under it after the test."""
    prefix = prefix_for(place)
    _created.add(prefix)
    return prefix


def _default(field_name: str) -> Any:
    return Settings.model_fields[field_name].default


def require_elastic() -> None:
    """Skip the test, loudly, when the test cluster cannot be reached."""
    if not _unreachable:
        client = Elasticsearch(URL, request_timeout=10)
        try:
            client.cluster.health(wait_for_status="yellow", timeout="10s")
            _unreachable.append("")
        except Exception as error:  # noqa: BLE001 - any failure to reach it is a reason to skip
            _unreachable.append(f"{type(error).__name__}: {error}"[:200])
        finally:
            client.close()
    if _unreachable[0]:
        service_missing(
            f"Elasticsearch at {URL} cannot be reached ({_unreachable[0]}); "
            "run `bash scripts/services up elasticsearch`"
        )


def make_backend(
    place: Path,
    *,
    url: str = URL,
    shapes: dict[str, IndexShape] | None = None,
    partitioning: dict[str, Partitioning] | None = None,
    **options: Any,
) -> ElasticRecordBackend:
    prefix = claim_prefix(place)
    # Contract suites search what they just wrote: each bulk refreshes unless a test asks
    # for the production default ("false") to show what holds without a refresh.
    options.setdefault("refresh", "true")
    return ElasticRecordBackend(
        ElasticConnection(hosts=(url,), request_timeout_s=10),
        prefix=prefix,
        shapes=shapes or dict.fromkeys(KINDS, TEST_SHAPE),
        partitioning=partitioning
        or {
            "event": _default("event_partitioning"),
            "session": _default("session_partitioning"),
            "profile": _default("profile_partitioning"),
        },
        batch_size=options.pop("batch_size", _default("writer_batch_size")),
        **options,
    )


@asynccontextmanager
async def elastic_backend(place: Path, **options: Any) -> AsyncIterator[ElasticRecordBackend]:
    """A started backend on the place's prefix, closed (not dropped) on exit."""
    require_elastic()
    backend = make_backend(place, **options)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def drop_created_prefixes() -> None:
    """Delete the indices and templates of every prefix opened since the last call."""
    if not _created:
        return
    client = Elasticsearch(URL, request_timeout=30)
    try:
        for prefix in sorted(_created):
            drop_prefix(client, prefix)
    finally:
        client.close()
        _created.clear()


def drop_prefix(client: Elasticsearch, prefix: str) -> None:
    pattern = Names(prefix).everything()
    indices = client.indices.get(
        index=pattern, expand_wildcards="all", allow_no_indices=True, ignore_unavailable=True
    )
    names = sorted(indices.body)
    for start in range(0, len(names), 50):
        client.indices.delete(index=",".join(names[start : start + 50]))
    templates = client.options(ignore_status=404).indices.get_index_template(name=pattern)
    for item in templates.body.get("index_templates") or []:
        client.indices.delete_index_template(name=item["name"])
    components = client.cluster.get_component_template()
    for item in components.body.get("component_templates") or []:
        if item["name"].startswith(prefix + "."):
            client.cluster.delete_component_template(name=item["name"])


def make_searchable() -> None:
    """Refresh every index, so searches see every acknowledged write. A server in the
    production default (TESSERA_ELASTIC_WRITE_REFRESH=false) makes its writes searchable only
    at each index's next scheduled refresh; a test that counts through searches (listings of
    a profile's events) calls this first, instead of waiting for the interval."""
    client = Elasticsearch(URL, request_timeout=60)
    try:
        client.indices.refresh(index="_all", expand_wildcards="open")
    finally:
        client.close()
