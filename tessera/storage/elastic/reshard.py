"""Resharding a kind while ingestion goes on: its partitions copied into a new generation.

The shard count of an index is fixed when it is created, so `reshard(kind, shards)` copies
every partition of the kind (`….event.v1-2024-03`, all tenants) into a partition of the next
generation (`….event.v2-2024-03`) created with the new shape, and swaps them behind the read
alias. Nothing is stopped: writers go on committing (writer.py) and readers go on reading
through the alias. Elasticsearch's `_reindex` is not used (it is an optional module, and it
could not rebuild the search fields, which are not kept in `_source`): documents are read in
pages and written again with codec.moved, which decodes each record and encodes it as the
writer does (which also converts documents of an earlier search representation, legacy.py).

The algorithm, for kind K moving from generation g to g+1:

1. Prepare g+1: its component template (the new shards/replicas) and every tenant's index
   template for `….K.v<g+1>-*` (with the read alias). Store "K writes g+1, moving from g" in
   `<prefix>.generations` (generations.py). Then put the *fence*: a template of higher
   priority that matches the partitions of every generation below g+1 and creates them
   write-blocked. Wait `settle_s` (longer than the writers' generation TTL) so that every
   writer plans with g+1; correctness does not depend on this wait (see 4.), it only spares
   writers refused writes.
2. From then on writers (writer.py) create new records and events in g+1 partitions, and a
   record they update that lives in g is written into the same partition of g+1 and its g
   copy deleted ("moves on write"). A lookup that finds copies in both generations takes the
   one in g+1 as the record.
3. Each g partition O, one after the other, moves to its g+1 partition N:
   a. O gets a write block (`_block/write`: it returns once the writes in flight on O are
      done). From here O never changes again.
   b. N is created if no writer has created it yet, and its entry in the read alias gets a
      filter that hides the documents marked `mv` (the reshard's copies, below). N's own
      documents, written by writers, stay visible.
   c. O is read in pages (point in time + search_after on `_shard_doc`) and every document
      written to N with `op_type=create`, marked `mv`. If N already has the id, a writer wrote
      it after O froze, so N's is the newer version: the create is refused (409) and it stays.
   d. N is refreshed, then one atomic alias update removes N's filter and takes O out of the
      alias. Readers see, before it, O's copies (plus what writers wrote to N); after it, N's
      documents.
   e. After a pass over every partition, and `grace_s` after its last swap, the swapped-out
      indices are deleted. Not at once: a search resolves the alias (and its filters) when it
      starts; deleting O under a search that resolved "O + N with the filter" would make that
      search fail on O's shards (reads are whole or fail, reads.py: it is tried again, and
      answers 503 if that fails too). A search that started before a swap and still runs
      `grace_s` later fails that way; every other search sees a whole generation.
4. When no partition of a generation below g+1 is left (the list is read again until empty:
   a writer that still planned with g can only have created a write-blocked, empty partition
   through the fence, outside the alias, which the next pass deletes), store "K writes g+1"
   and remove the templates of g. The fence stays, so a writer with a very stale view can
   never again create a usable g partition.

Why a write is never lost: the only writes that could be lost are ones made to O after its
copy was read, and there are none: O is write-blocked before it is read, and a writer's write
to a blocked (or fenced) index is refused, after which the writer reads the generations again
and plans its whole batch anew (so it writes to N). A write to N is never overwritten by the
copy (create never replaces). A write that landed in O before the block is in O when it is
read. So after the move every record of O is in N exactly once, at its latest committed
version; events keep their insert-once rule (the writer's `ids` lookup over the alias still
sees the event in O or N, and the copy is a create), and every record has one copy: N's, as
O is gone.

What readers see during the move (stores.py):
- Nothing is missing at any moment: a record is in O (visible) until the atomic swap, or in N
  (visible) if a writer wrote it; a writer leaves the old copy alone (it goes with O at the
  swap). The one exception is a search that
  started before a swap and is still running `grace_s` later (step 3e).
- Briefly twice: a record updated by a writer while its partition is being copied (between
  3a and 3d) is visible in O (its frozen old version) and in N (the new one), until the swap
  of that partition; a record written into N before its partition is copied is visible twice
  until that swap too. `get` (a multi-get, homes.py) takes the newest generation's copy; a
  search page lists each id once, as its newest copy; but a search's `total` counts such a
  record twice, and a condition only the old version matches finds the old version.

What waits: a change set that must *delete* a record living in the partition being copied (a
merge retiring a profile, an erasure) is refused by the write block; the writer plans it again
until the partition has moved, within its retry budget (the writer's `retry_budget_s`, 5 s by
default). A partition that takes longer to copy makes that change set fail with
StorageUnavailable, exactly like a cluster that is briefly away: nothing of it is reported
done, and committing it again after the move completes it (the copy may have brought a deleted
record into N meanwhile; the repeated change set deletes it there).

Interrupted (the process dies, the cluster goes away): run the same reshard again. The stored
state says which generation is being filled and with which shape (another shape is refused
until that one is done); a partition already swapped out of the alias is only deleted, a
half-copied one is copied again (creates of documents already copied answer 409), and a
blocked one stays readable meanwhile. Writers are unaffected by the interruption beyond the
waits above. Do not run two reshards of the same kind at the same time: nothing locks them
against each other.

Not covered: the small kinds that are not partitioned (identity links, retired profiles),
and the search totals noted above. Two writer processes updating the same record at the same
moment race as they always do (the last bulk wins); the reshard adds no new race to that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import msgspec
from elasticsearch import AsyncElasticsearch

from tessera.errors import Conflict, InvalidPayload, StorageUnavailable
from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.storage.elastic import codec
from tessera.storage.elastic.bulk import Operation, Retrier, send
from tessera.storage.elastic.generations import (
    DEFAULT_TTL_S,
    KindGeneration,
    read_generations,
    write_generation,
)
from tessera.storage.elastic.inventory import KnownIndex, known_indices
from tessera.storage.elastic.mappings import MOVED_FIELD
from tessera.storage.elastic.naming import PARTITIONED_KINDS, Names
from tessera.storage.elastic.schema import ElasticSchema, IndexShape

log = logging.getLogger(__name__)

PAGE_SIZE: Final = 1000
# Longer than a writer's generation TTL (generations.DEFAULT_TTL_S).
DEFAULT_SETTLE_S: Final = DEFAULT_TTL_S + 1.0
# Passes over the list of old partitions; more than two means writers keep making some.
MAX_PASSES: Final = 5
KEEP_ALIVE: Final = "2m"
# Between the last swap of a pass and deleting the swapped-out indices (step 3e).
DEFAULT_GRACE_S: Final = 5.0
DELETE_BATCH: Final = 50
# A failing page is sent again for this long before the reshard stops (run it again).
RETRY_BUDGET_S: Final = 30.0
RECORD_TYPES: Final[dict[str, type[Event] | type[Session] | type[Profile]]] = {
    "event": Event,
    "session": Session,
    "profile": Profile,
}
HIDE_COPIES: Final[dict[str, Any]] = {"bool": {"must_not": {"exists": {"field": MOVED_FIELD}}}}

# (partition being moved, documents copied so far, documents in it)
Progress = Callable[[str, int, int], None]


class MovedPartition(msgspec.Struct, frozen=True):
    source: str
    target: str
    documents: int


class ReshardReport(msgspec.Struct, frozen=True):
    kind: str
    from_generation: int
    to_generation: int
    shards: int
    replicas: int
    resumed: bool
    moved: list[MovedPartition]


async def reshard(
    client: AsyncElasticsearch,
    names: Names,
    schema: ElasticSchema,
    kind: str,
    shape: IndexShape,
    *,
    settle_s: float = DEFAULT_SETTLE_S,
    grace_s: float = DEFAULT_GRACE_S,
    page_size: int = PAGE_SIZE,
    on_progress: Progress | None = None,
    on_partitions: Callable[[list[tuple[str, int]]], None] | None = None,
) -> ReshardReport:
    """Move every partition of `kind` into a new generation with `shape` (module docstring).

    `on_partitions` hears the partitions of each pass (name, documents) before they move,
    `on_progress` the copying of each.
    """
    if kind not in PARTITIONED_KINDS:
        raise InvalidPayload(f"kind: one of {', '.join(PARTITIONED_KINDS)}, not {kind!r}")
    if shape.shards < 1 or shape.replicas < 0:
        raise InvalidPayload("shards must be at least 1 and replicas at least 0")
    state = (await read_generations(client, names))[kind]
    resumed = state.moving_from is not None
    if state.moving_from is not None:
        target, source = state.generation, state.moving_from
        if (state.shards, state.replicas) != (shape.shards, shape.replicas):
            raise Conflict(
                f"a reshard of {kind} to {state.shards} shards / {state.replicas} replicas "
                f"(generation {target}) is unfinished: run it again with those numbers first"
            )
    else:
        source, target = state.generation, state.generation + 1
        await _prepare(client, names, schema, kind, target, shape, source)
    schema.generations.forget()
    await asyncio.sleep(settle_s)
    moved: list[MovedPartition] = []
    for _ in range(MAX_PASSES):
        left = await _left_partitions(client, names, kind, target)
        if not left:
            break
        counts = [(index.name, await _count(client, index.name)) for index in left]
        if on_partitions is not None:
            on_partitions(counts)
        for index in left:
            moved.append(await _move(client, names, kind, index, target, page_size, on_progress))
        await asyncio.sleep(grace_s)
        swapped = [index.name for index in left]
        for start in range(0, len(swapped), DELETE_BATCH):
            batch = ",".join(swapped[start : start + DELETE_BATCH])
            await client.indices.delete(index=batch, ignore_unavailable=True)
    else:
        raise StorageUnavailable(
            f"partitions of {kind} below generation {target} keep appearing: some writer "
            "still writes an old generation; run the reshard again later"
        )
    done = KindGeneration(kind, target, None, shape.shards, shape.replicas)
    await write_generation(client, names, done)
    tenants = await _tenants_of(client, names, kind)
    for generation in range(1, target):
        await schema.drop_generation(kind, generation, tenants)
    schema.generations.forget()
    return ReshardReport(
        kind=kind,
        from_generation=source,
        to_generation=target,
        shards=shape.shards,
        replicas=shape.replicas,
        resumed=resumed,
        moved=moved,
    )


async def _prepare(
    client: AsyncElasticsearch,
    names: Names,
    schema: ElasticSchema,
    kind: str,
    target: int,
    shape: IndexShape,
    source: int,
) -> None:
    """Step 1: templates of the new generation, the stored state, then the fence."""
    tenants = await _tenants_of(client, names, kind)
    await schema.put_generation(kind, target, shape, tenants)
    moving = KindGeneration(kind, target, source, shape.shards, shape.replicas)
    await write_generation(client, names, moving)
    await schema.put_fence(kind, target)
    log.info("reshard: %s writes generation %d from now on (%s)", kind, target, shape)


async def _tenants_of(client: AsyncElasticsearch, names: Names, kind: str) -> set[str]:
    return {index.tenant for index in await known_indices(client, names) if index.kind == kind}


async def _left_partitions(
    client: AsyncElasticsearch, names: Names, kind: str, target: int
) -> list[KnownIndex]:
    indices = await known_indices(client, names)
    return [i for i in indices if i.kind == kind and i.version < target and i.partition]


async def _count(client: AsyncElasticsearch, index: str) -> int:
    answer = await client.count(index=index)
    return int(answer["count"])


async def _move(
    client: AsyncElasticsearch,
    names: Names,
    kind: str,
    old: KnownIndex,
    target: int,
    page_size: int,
    on_progress: Progress | None,
) -> MovedPartition:
    """Step 3 for one partition: freeze, hide the copies, copy, swap."""
    assert old.partition is not None
    alias = names.alias(old.tenant, kind)
    new = names.partition_index(old.tenant, kind, old.partition, target)
    if not await client.indices.exists_alias(index=old.name, name=alias):
        # Swapped by an interrupted run already (or a fenced, empty partition): only its
        # deletion is left, and hiding N's copies now would hide documents.
        return MovedPartition(source=old.name, target=new, documents=0)
    await client.indices.add_block(index=old.name, block="write")
    await client.indices.refresh(index=old.name)
    # 400 when a writer created it already (resource_already_exists_exception): fine.
    await client.options(ignore_status=400).indices.create(index=new)
    # Readers see it through the alias from the next step on: its primary shards must be
    # started by then (a writer that created it may have returned before they were), or every
    # read of the alias would fail while they start.
    await client.cluster.health(index=new, wait_for_status="yellow", timeout="60s")
    await client.indices.update_aliases(
        actions=[{"add": {"index": new, "alias": alias, "filter": HIDE_COPIES}}]
    )
    total = await _count(client, old.name)
    copied = await _copy(client, kind, old.name, new, target, total, page_size, on_progress)
    await client.indices.refresh(index=new)
    await client.indices.update_aliases(
        actions=[
            {"add": {"index": new, "alias": alias}},
            {"remove": {"index": old.name, "alias": alias}},
        ]
    )
    log.info("reshard: %s (%d documents) moved to %s", old.name, copied, new)
    return MovedPartition(source=old.name, target=new, documents=copied)


async def _copy(
    client: AsyncElasticsearch,
    kind: str,
    source: str,
    target: str,
    generation: int,
    total: int,
    page_size: int,
    on_progress: Progress | None,
) -> int:
    """Every document of the frozen `source` created in `target` (existing ids stay)."""
    record_type = RECORD_TYPES[kind]
    opened = await client.open_point_in_time(index=source, keep_alive=KEEP_ALIVE)
    pit_id: str = opened["id"]
    copied = 0
    after: list[Any] | None = None
    try:
        while True:
            extra: dict[str, Any] = {"search_after": after} if after is not None else {}
            answer = await client.search(
                pit={"id": pit_id, "keep_alive": KEEP_ALIVE},
                sort=[{"_shard_doc": "asc"}],
                size=page_size,
                track_total_hits=False,
                **extra,
            )
            pit_id = answer.get("pit_id", pit_id)
            hits = answer["hits"]["hits"]
            if not hits:
                return copied
            operations = [
                Operation(
                    0,
                    "create",
                    target,
                    hit["_id"],
                    codec.moved(hit["_source"], record_type, generation),
                )
                for hit in hits
            ]
            # Created documents are hidden until the swap: no refresh per page is needed.
            failures = await send(
                client, operations, refresh="false", retrier=Retrier(RETRY_BUDGET_S)
            )
            if failures:
                raise StorageUnavailable(
                    f"copying {source} into {target} failed: {failures[0]}; run the reshard "
                    "again to continue"
                )
            copied += len(hits)
            after = hits[-1]["sort"]
            if on_progress is not None:
                on_progress(source, copied, total)
    finally:
        await client.close_point_in_time(id=pit_id)
