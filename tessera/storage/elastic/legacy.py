"""Partitions of the earlier search representation: never searched as if they were current.

Before issue 13 every document indexed its searchable form as one `nested` field `sx`; now it
indexes the path-prefixed terms of fields.py. A partition created by an earlier version keeps
its mapping (Elasticsearch never changes a field's type in place), and its documents have no
`sk` terms: a condition searched there would silently miss every one of them (and NOT or IS
NULL would match them all). So a condition or a sort over an alias that still holds such a
partition is refused with a 503 naming the partitions and the way out (`tessera reshard`,
docs/distributed.md), until a reshard has re-encoded them into a new generation.

Reads by id, lists by profile and writes are not affected: they never use the search fields.
The check reads the mappings behind the alias once per `RECHECK_S` while they are clean (a
restore of an old snapshot could bring such a partition back), and again on every search
while they are not, so the refusal ends as soon as the reshard has swapped the last one out.
"""

from __future__ import annotations

import time
from typing import Final

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch

from tessera.errors import StorageUnavailable
from tessera.storage.elastic.fields import LEGACY_FIELD
from tessera.storage.elastic.reads import read_error

RECHECK_S: Final = 60.0
# How long a client is told to wait: the refusal lasts until an operator reshards.
RETRY_AFTER_S: Final = 60


class SearchNeedsReshard(StorageUnavailable):
    """Partitions behind the alias index the search representation of an earlier version."""

    retry_after = RETRY_AFTER_S
    public_message = "search is unavailable until the storage is upgraded; retry later"


# (client, alias) → when its mappings were last found clean (time.monotonic()).
_clean: dict[tuple[int, str], float] = {}


async def ensure_current(client: AsyncElasticsearch, index: str) -> None:
    """Raise SearchNeedsReshard if a partition under `index` has the earlier mapping."""
    key = (id(client), index)
    checked = _clean.get(key)
    if checked is not None and time.monotonic() - checked < RECHECK_S:
        return
    legacy = await legacy_partitions(client, index)
    if legacy:
        shown = ", ".join(legacy[:5]) + (f" and {len(legacy) - 5} more" if len(legacy) > 5 else "")
        raise SearchNeedsReshard(
            f"Elasticsearch: {shown} still hold the search representation of an earlier "
            f"Tessera version (the nested field `{LEGACY_FIELD}`), which conditions and sorts "
            "can no longer read; run `tessera reshard` for each kind (docs/distributed.md, "
            "upgrading) to re-encode them"
        )
    _clean[key] = time.monotonic()


async def legacy_partitions(client: AsyncElasticsearch, index: str) -> list[str]:
    """The indices under `index` (an alias or pattern) whose mapping has the `sx` field."""
    try:
        answer = await client.indices.get_mapping(
            index=index,
            ignore_unavailable=True,
            allow_no_indices=True,
            filter_path=f"*.mappings.properties.{LEGACY_FIELD}.type",
        )
    except (TransportError, ApiError) as exc:
        raise read_error(exc, f"reading the mappings of {index}") from exc
    return sorted(answer.body or {})
