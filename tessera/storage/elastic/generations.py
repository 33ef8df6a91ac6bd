"""Which generation of indices each partitioned kind writes, kept in the cluster.

A reshard (reshard.py) copies a kind's partitions into indices of the next generation
(`….event.v2-2024-03`) with another shard count. Every writer must then create new partitions
in that generation and move the records it updates there, so the generation lives where every
process sees it: one document per kind in the small index `<prefix>.generations`. A kind
without a document (every installation that never resharded) is at generation 1.

Writers read it through GenerationView, cached for `ttl_s`: one realtime multi-get per TTL,
not one per batch. A stale view is safe (see reshard.py for why): the reshard waits longer
than the TTL before it starts copying, and a write planned with a stale view that reaches a
partition being moved or already moved is refused by a write block, after which the writer
reads the generations again and plans the batch anew.

The index is part of every snapshot of the prefix (it is one of its indices), so a restore
brings back the generations together with the indices named after them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from elasticsearch import AsyncElasticsearch, NotFoundError

from tessera.storage.elastic.naming import FIRST_GENERATION, PARTITIONED_KINDS, Names
from tessera.storage.elastic.reads import found_documents

DEFAULT_TTL_S = 2.0


class KindGeneration(msgspec.Struct, frozen=True):
    """Where a kind writes: `generation`; `moving_from` while a reshard still copies the
    partitions of that older generation; the shape the generation's indices are created with
    (None for generation 1, whose shape comes from the settings)."""

    kind: str
    generation: int = FIRST_GENERATION
    moving_from: int | None = None
    shards: int | None = None
    replicas: int | None = None


async def read_generations(client: AsyncElasticsearch, names: Names) -> dict[str, KindGeneration]:
    """The generation of every partitioned kind, straight from the cluster (realtime)."""
    found = {kind: KindGeneration(kind) for kind in PARTITIONED_KINDS}
    try:
        answer = await client.mget(
            index=names.generations_index(), ids=list(PARTITIONED_KINDS), realtime=True
        )
    except NotFoundError:
        return found
    # A document that could not be read is an error, not "generation 1": writing into the
    # wrong generation would put records where no reader expects them.
    for doc in found_documents(answer.body, "reading the generations"):
        found[doc["_id"]] = msgspec.convert(doc["_source"], KindGeneration)
    return found


async def write_generation(client: AsyncElasticsearch, names: Names, state: KindGeneration) -> None:
    """Store a kind's generation; visible to every realtime read once this returns."""
    await _ensure_index(client, names)
    await client.index(
        index=names.generations_index(),
        id=state.kind,
        document=msgspec.to_builtins(state),
        refresh="true",
    )


async def _ensure_index(client: AsyncElasticsearch, names: Names) -> None:
    index = names.generations_index()
    if await client.indices.exists(index=index):
        return
    mappings: dict[str, Any] = {"dynamic": False, "properties": {"kind": {"type": "keyword"}}}
    await client.options(ignore_status=400).indices.create(
        index=index,
        # A handful of documents: one shard, and a replica wherever there is a second node.
        settings={"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1"}},
        mappings=mappings,
    )
    # A 400 means another process created it a moment ago: its shard may not be started yet,
    # and every read of the generations would fail until it is.
    await client.cluster.health(index=index, wait_for_status="yellow", timeout="30s")


class GenerationView:
    """The generations as one process last read them, read again after `ttl_s`."""

    def __init__(self, client: AsyncElasticsearch, names: Names, ttl_s: float) -> None:
        self._client = client
        self._names = names
        self._ttl_s = ttl_s
        self._known: dict[str, KindGeneration] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def current(self, *, fresh: bool = False) -> dict[str, KindGeneration]:
        """The generations, read again when older than the TTL (or when `fresh`)."""
        async with self._lock:
            stale = time.monotonic() - self._read_at >= self._ttl_s
            if self._known is None or stale or fresh:
                self._known = await read_generations(self._client, self._names)
                self._read_at = time.monotonic()
            return self._known

    async def write_generation(self, kind: str) -> int:
        return (await self.current())[kind].generation

    def forget(self) -> None:
        """Read again at the next use (after a write was refused by a moving partition)."""
        self._known = None
