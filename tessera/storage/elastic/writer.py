"""The Elasticsearch writer: group commit of change sets into bulk requests.

Callers hand a ChangeSet to ``commit`` and wait. One task takes whatever has queued up (up to
``batch_size`` records), turns it into bulk requests, and wakes every caller of the batch once
Elasticsearch has answered. A batch goes out as soon as the writer is free, with no timer:
while one is on its way the queue fills behind it by itself, and goes out as the next bulk
when the first is answered. A second batch goes out beside one on its way (up to
``max_in_flight``) only when the queue holds enough records to fill a bulk of its own
(``PARALLEL_BULK_RECORDS``): many small bulks in parallel cost Elasticsearch more per record
(each bulk is a shard request and a translog sync per index) and the API process more
requests; measured with single-event requests, one bulk at a time with no wait to fill
handled 976 requests/s where four bulks in flight, each waiting 2 ms, handled 804, at 1.3 times
Elasticsearch's CPU per event; with 20-event requests the queue is long enough for bulks in
parallel, which is what keeps Elasticsearch busy there. That is safe because every caller that
changes a profile, a session or an identity link holds that record's lock until its commit is
answered (core/locks.py): two versions of one record are never in flight together, so
batches written side by side never race on a record.

A holder can let go of its lock while its bulk request is still on its way, though: the
request timed out (Elasticsearch hung), the caller was answered 503 and released its locks,
and Elasticsearch applies the bulk later, possibly after the next holder's newer write of the
same profile or session. So profiles and sessions are written, and retired profiles deleted
from their partitions, with their versions from the change set (``ChangeSet.versions``: the
fencing tokens of their locks) as `external_gte` versions: Elasticsearch keeps the newest
holder's document and refuses an older one (409, bulk.py), which fails its caller, if it
still waits, with StorageUnavailable. Tokens are far above the small internal versions of
documents written before; stray copies and the old-generation copies of moved records are
deleted unversioned, and reshard.py's copies (`op_type=create`, version 1) never refuse a
later versioned write.

Where each record goes — always an index known without asking Elasticsearch, so no search
precedes a write:

- Events: into the partition of their event time (`EVENT_PARTITIONING`; bounded around the
  arrival time, see partition_moment), with `op_type=create`, so a repeated id in the same
  partition keeps the first event (409 is the expected answer). Whether an event is stored
  already is the ingest's question, asked by id in that same partition (stores.py,
  `existing_ids` with the events' moments).
- Profiles and sessions: into their *home* partition (``_place``). A record's home is chosen
  once, at its first write, from its first-seen time (`metadata.time.insert`), and kept in the
  record (`metadata.partition`), in the document and in the cache; a read by id tells it from
  the index the record came from (homes.py). It is never recomputed: a merge gives the
  survivor the earlier insert time of the two (identity/merge.py), which may lie in another
  partition, and the profile would then exist twice.
- Identity links, profile aliases, retired profiles: small indices per tenant, document id =
  digest / `id:` + alias / id.
- Generations (generations.py, reshard.py): records are written into the generation the kind
  writes now. A copy an older generation still holds is left to the reshard, which copies it
  only where no newer copy is and then deletes the old index whole; reads by id prefer the
  newest generation's copy. A write refused by a write block (the partition is being moved,
  or this process planned with generations that have changed) makes the writer read the
  generations again and plan the whole batch anew, within the retry budget; everything it
  sends is idempotent, so sending again is safe.

Visibility: bulk requests do not refresh (``refresh`` "false" by default; ELASTIC_WRITE_REFRESH).
Reads by id are realtime and see every acknowledged write at once (homes.py); searches see
it after the index's next refresh (`refresh_interval`, ELASTIC_*_REFRESH_INTERVAL). A refresh
per bulk cost three shard refreshes per request and more Elasticsearch CPU than the indexing
itself. Elasticsearch has no transactions across documents: a change set that
fails may be partly stored. Every operation is idempotent (upserts, insert-once events,
deletes), the operations go out in three phases (``_operations``) so that what is stored of a
failed change set is always something its retry can complete, and the profile and session carry
the request's mark so the retry counts nothing twice (model/applied.py, pipeline/ingest.py).
An item refused for what it is (a 4xx: a mapping error …) fails its caller with RecordRejected,
one that may pass (no answer, overload past the retry budget) or that a later lock holder's
write outdated (a version conflict) with StorageUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from elasticsearch import AsyncElasticsearch

from tessera.errors import RecordRejected, StorageRefused, StorageUnavailable
from tessera.model.event import Event
from tessera.model.event_time import filed_moment
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.storage.elastic import codec
from tessera.storage.elastic.bulk import Operation, PartitionMoving, Refresh, Retrier, send
from tessera.storage.elastic.erasure import erase
from tessera.storage.elastic.generations import KindGeneration
from tessera.storage.elastic.homes import Partitions, alias_key
from tessera.storage.elastic.inventory import partition_range, recognise
from tessera.storage.elastic.naming import Names, Partitioning, partition
from tessera.storage.elastic.schema import ElasticSchema
from tessera.storage.elastic.wire import ElasticWire
from tessera.storage.ports import ChangeSet

log = logging.getLogger(__name__)

# Elasticsearch refuses longer document ids, and with them the whole bulk request.
MAX_ID_BYTES = 512
# Queued records that justify a bulk beside one on its way (see the module docstring).
PARALLEL_BULK_RECORDS = 64

Key = tuple[str, str]  # (tenant, record id)


@dataclass(slots=True)
class _Pending:
    changes: ChangeSet
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Encoded:
    """One caller's records as documents, before their indices are known."""

    owner: int
    changes: ChangeSet
    events: list[tuple[Event, bytes]] = field(default_factory=list)
    sessions: list[tuple[Session, bytes]] = field(default_factory=list)
    profiles: list[tuple[Profile, bytes]] = field(default_factory=list)
    retired: list[tuple[str, str, bytes]] = field(default_factory=list)
    identities: list[tuple[str, str, bytes]] = field(default_factory=list)


class ElasticWriter:
    def __init__(
        self,
        client: AsyncElasticsearch,
        names: Names,
        schema: ElasticSchema,
        partitioning: dict[str, Partitioning],
        *,
        batch_size: int,
        partitions: Partitions | None = None,
        refresh: Refresh = "false",
        retry_budget_s: float = 5.0,
        max_in_flight: int = 4,
        wire: ElasticWire | None = None,
    ) -> None:
        self._client = client
        # The bulks go out over the lean connections when given (wire.py).
        self._wire = wire
        self._partitions = partitions
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._writing: set[asyncio.Task[None]] = set()
        self._names = names
        self._schema = schema
        self._partitioning = partitioning
        self._batch_size = batch_size
        self._parallel_records = min(batch_size, PARALLEL_BULK_RECORDS)
        self._refresh: Refresh = refresh
        self._retry_budget_s = retry_budget_s
        self._queue: deque[_Pending] = deque()
        self._queued_records = 0
        # Set when a change set arrives, a batch is answered, or the writer is stopping.
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Batches written (one group commit each), the records in them, and the batches that
        # needed a bulk request (an empty change set needs none).
        self.commits = 0
        self.records = 0
        self.bulk_requests = 0
        # Batches planned again because a write met a partition a reshard is moving.
        self.replans = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._stopping

    def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="tessera-elastic-writer"
        )

    async def stop(self) -> None:
        """Write what is queued, then end the task."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await self._task
        self._task = None

    async def commit(self, changes: ChangeSet) -> None:
        if not self.running:
            raise StorageUnavailable("the Elasticsearch record store is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(changes, future))
        self._queued_records += len(changes)
        self._wake.set()
        await future

    # --- batching ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            waiting = not self._queue or (
                self._writing
                and self._queued_records < self._parallel_records
                and not self._stopping
            )
            if waiting:
                if not self._queue and self._stopping:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._in_flight.acquire()
            batch = self._next_batch()
            task = asyncio.create_task(self._write_batch(batch), name="tessera-elastic-bulk")
            self._writing.add(task)
            # In the callback, not in the task: when the writer wakes, the task is gone from
            # `_writing` already.
            task.add_done_callback(self._answered)
        if self._writing:
            await asyncio.gather(*self._writing)

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._writing.discard(task)
        self._wake.set()

    async def _write_batch(self, batch: list[_Pending]) -> None:
        try:
            await self._write(batch)
        except StorageRefused as exc:
            # A look-up Tessera made was refused (a defect, not an outage): not "retry later".
            log.exception("Elasticsearch refused a look-up of the writer")
            _fail(batch, exc)
        # This task serves every caller: whatever goes wrong, it must survive and say so to
        # the callers concerned, never die and leave them (and all later ones) waiting.
        except Exception as exc:
            log.exception("Elasticsearch commit failed")
            _fail(batch, StorageUnavailable(f"the record store could not commit: {exc}"))
        finally:
            self._in_flight.release()

    def _next_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        while self._queue and (not batch or size < self._batch_size):
            item = self._queue.popleft()
            batch.append(item)
            size += len(item.changes)
        self._queued_records -= size
        return batch

    # --- one batch -----------------------------------------------------------------------

    async def _write(self, batch: list[_Pending]) -> None:
        encoded: list[_Encoded] = []
        errors: dict[int, str] = {}
        # Owners whose records Elasticsearch (or the encoder) refused for what they are.
        refused: set[int] = set()
        for owner, item in enumerate(batch):
            try:
                self._place(item.changes)
                encoded.append(_encode(owner, item.changes))
            except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
                errors[owner] = f"a record cannot be stored: {exc}"
                refused.add(owner)
        retrier = Retrier(self._retry_budget_s)
        while encoded:
            try:
                errors.update(await self._store(encoded, retrier, refused))
            except PartitionMoving as exc:
                # Planned with generations that changed, or into a partition being moved.
                self._schema.generations.forget()
                self.replans += 1
                if retrier.time_left():
                    await retrier.pause()
                    continue
                for done in encoded:
                    errors.setdefault(done.owner, str(exc))
            except StorageUnavailable as exc:
                for done in encoded:
                    errors.setdefault(done.owner, str(exc))
            break
        self.commits += 1
        self.records += sum(
            len(item.changes) for owner, item in enumerate(batch) if owner not in errors
        )
        for owner, item in enumerate(batch):
            if item.future.done():  # the caller gave up (client went away); nothing to tell it
                continue
            if owner in refused:
                item.future.set_exception(
                    RecordRejected(f"the record store refused a record: {errors[owner]}")
                )
            elif owner in errors:
                item.future.set_exception(
                    StorageUnavailable(f"the record store could not commit: {errors[owner]}")
                )
            else:
                item.future.set_result(None)

    async def _store(
        self, encoded: list[_Encoded], retrier: Retrier, refused: set[int]
    ) -> dict[int, str]:
        tenants = {tenant for item in encoded for tenant in _tenants(item.changes)}
        await retrier.call(
            "preparing the tenant's templates", lambda: self._schema.ensure_tenants(tenants)
        )
        generations = await retrier.call(
            "reading the generations", lambda: self._schema.generations.current()
        )
        phases = self._operations(encoded, generations)
        failures: dict[int, str] = {}
        for phase in phases:
            # An owner whose earlier phase failed sends nothing more (see _operations).
            operations = [op for op in phase if op.owner not in failures]
            if not operations:
                continue
            blocked: set[int] = set()
            failures.update(
                await send(
                    self._client,
                    operations,
                    refresh=self._refresh,
                    retrier=retrier,
                    blocked=blocked,
                    refused=refused,
                    wire=self._wire,
                )
            )
            self.bulk_requests += 1
            self._note_partitions(operations)
            if blocked:
                raise PartitionMoving(f"a partition is being moved: {failures[min(blocked)]}")
        for item in encoded:
            if item.owner in failures:
                continue
            for erasure in item.changes.erasures:
                try:
                    await erase(
                        self._client,
                        self._names,
                        erasure,
                        item.changes.versions,
                        # An erasure searches what is left after each round of deletes: they
                        # must be searchable at once, whatever the writes do (rare, admin-made).
                        refresh="true",
                        retrier=retrier,
                    )
                except PartitionMoving:
                    raise
                except StorageUnavailable as exc:
                    failures[item.owner] = str(exc)
                    break
        return failures

    def _place(self, changes: ChangeSet) -> None:
        """Give every profile and session of the change set its home partition: the one it
        has (read from where it is stored, or given at its first write), else the partition of
        its first-seen time. The record keeps it (metadata.partition), in the document and in
        the cache, so no later write needs to look for it."""
        for profile in changes.profiles:
            profile.metadata.partition = self._home(
                "profile", profile.metadata.partition, profile.metadata.time.insert
            )
        for gone in changes.retired:
            meta = gone.profile.metadata
            meta.partition = self._home("profile", meta.partition, meta.time.insert)
        for session in changes.sessions:
            session.metadata.partition = self._home(
                "session", session.metadata.partition, session.metadata.time.insert
            )

    def _home(self, kind: str, kept: str | None, first_seen: datetime) -> str:
        if kept is not None:
            try:
                partition_range(kept)
                return kept
            except ValueError:
                # Not a partition name (the record's metadata was changed by hand): place it
                # as a new record would be; log it, since its copy elsewhere stays behind.
                log.warning("a %s named no valid partition (%r); placed by its time", kind, kept)
        return partition(first_seen, self._partitioning[kind])

    def _note_partitions(self, operations: Iterable[Operation]) -> None:
        """A write into a partition this process has not listed created it (or another process
        did): read the list again, so reads by id ask it (homes.py)."""
        if self._partitions is None:
            return
        for index in {op.index for op in operations}:  # a bulk names few indices, many times
            known = recognise(self._names, index)
            if known is None or known.partition is None:
                continue
            # Only a kept listing that lacks it is forgotten: forgetting every listing of the
            # tenant whenever a kind nobody reads by id (events) was written made every
            # bulk cost a listing of the sessions' and profiles' partitions.
            if self._partitions.missing(known.tenant, known.kind, index):
                self._partitions.forget_kind(known.tenant, known.kind)

    def _operations(
        self, encoded: list[_Encoded], generations: dict[str, KindGeneration]
    ) -> tuple[list[Operation], list[Operation], list[Operation]]:
        """The batch as bulk operations in three phases, each sent once the one before it is
        stored, so that a change set stored only in part (Elasticsearch has no transactions)
        is always one a retry can complete without counting anything twice:

        1. events (insert-once), the retired profiles' last states, the retired entries an
           unmerge removes, released identity links, the links of the request's new identity
           values: an event Elasticsearch refuses fails its request
           before the profile counts it, and a value the profile is about to hold is found
           owned by every other request from now on (a link to a profile whose write then
           fails is harmless: a profile that does not exist owns nothing, and the next request
           that brings the value takes it);
        2. profiles and sessions, each into its home partition (``_place``), with the links
           of the profile's other ids (``_alias_links``): they carry the
           request's mark (model/applied.py), so from here on a retry knows the request was
           taken in, and counts it no more;
        3. what moves to the profile: merged-away profiles leave their partitions, their
           values' links are pointed at the survivor. Before the survivor is stored these must
           not move: a retry reads them to merge again (the loser still there, its values
           still its own) instead of finding the loser gone and its values pointing elsewhere.

        Within a phase: retiring before upserts that may bring a profile back, released
        identity links before new ones (the embedded writer's order).

        Every operation goes to an index known without asking Elasticsearch: a record's home
        partition in the generation its kind writes now. A copy left in an older generation
        by a reshard under way is not touched: the reshard copies it only where no newer copy
        is (`op_type=create`) and then deletes the old index whole, and reads by id prefer the
        newest generation's copy meanwhile (homes.pick)."""
        names = self._names
        ops: list[Operation] = []
        leaving: list[Operation] = []
        pointing: list[Operation] = []

        def homes(kind: str, tenant: str, suffix: str) -> list[str]:
            state = generations[kind]
            found = [names.partition_index(tenant, kind, suffix, state.generation)]
            if state.moving_from is not None:
                found.append(names.partition_index(tenant, kind, suffix, state.moving_from))
            return found

        # A profile retired and written again by the batch is brought back: its copies stay.
        written = {(p.tenant, p.id) for item in encoded for p, _ in item.profiles}
        for item in encoded:
            for tenant, record_id, doc in item.retired:
                ops.append(
                    Operation(
                        item.owner, "index", names.single_index(tenant, "retired"), record_id, doc
                    )
                )
            for gone in item.changes.retired:
                tenant, record_id = gone.profile.tenant, gone.profile.id
                if (tenant, record_id) in written or gone.profile.metadata.partition is None:
                    continue
                version = item.changes.versions.get(("profile", tenant, record_id))
                for index in homes("profile", tenant, gone.profile.metadata.partition):
                    leaving.append(
                        Operation(item.owner, "delete", index, record_id, version=version)
                    )
        for item in encoded:
            for tenant, record_id in item.changes.restored:
                ops.append(
                    Operation(
                        item.owner, "delete", names.single_index(tenant, "retired"), record_id
                    )
                )
        retiring, ops = ops, []
        for item in encoded:
            for profile, doc in item.profiles:
                assert profile.metadata.partition is not None  # _place gave every one its home
                target = homes("profile", profile.tenant, profile.metadata.partition)[0]
                version = item.changes.versions.get(("profile", profile.tenant, profile.id))
                ops.append(Operation(item.owner, "index", target, profile.id, doc, version=version))
                ops += _alias_links(
                    item.owner, names.single_index(profile.tenant, "identity"), profile
                )
        for item in encoded:
            for session, doc in item.sessions:
                assert session.metadata.partition is not None
                target = homes("session", session.tenant, session.metadata.partition)[0]
                version = item.changes.versions.get(("session", session.tenant, session.id))
                ops.append(Operation(item.owner, "index", target, session.id, doc, version=version))
        seen: set[Key] = set()
        for item in encoded:
            for event, doc in item.events:
                key = (event.tenant, event.id)
                if key in seen:
                    continue  # insert-once: the first event with this id stays
                seen.add(key)
                suffix = partition(partition_moment(event), self._partitioning["event"])
                index = names.partition_index(
                    event.tenant, "event", suffix, generations["event"].generation
                )
                # `create`: a repeated id in the same partition keeps the first event (409).
                retiring.append(Operation(item.owner, "create", index, event.id, doc))
        for item in encoded:
            # Released before any link of the same change set (a value can be released and
            # linked anew in one change set: the link is what stays).
            for tenant, digest in item.changes.released_identities:
                retiring.append(
                    Operation(item.owner, "delete", names.single_index(tenant, "identity"), digest)
                )
        for item in encoded:
            # The values of profiles this change set retires move to the survivor only once it
            # is written (phase 3); a request's new values are linked first (phase 1), so that
            # from then on every other request finds their owner, whether or not the profile
            # write that follows goes through.
            moving = {
                digest
                for gone in item.changes.retired
                for digests in gone.profile.metadata.identity.values()
                for digest in digests
            }
            for tenant, digest, doc in item.identities:
                operation = Operation(
                    item.owner, "index", names.single_index(tenant, "identity"), digest, doc
                )
                (pointing if digest in moving else retiring).append(operation)
        return retiring, ops, leaving + pointing


def partition_moment(event: Event) -> datetime:
    """The event time, kept within bounds around the time the event arrived
    (model/event_time.py): a client sending events "from" every day of the last century would
    otherwise make Elasticsearch create a partition per day. The event keeps its own time; only
    its partition is chosen from the bounded one. An import takes events in as of their own
    time (pipeline/history.py), so they are filed by it."""
    return filed_moment(event.time, event.metadata.insert)


def _alias_links(owner: int, index: str, profile: Profile) -> list[Operation]:
    """A link from each other id the profile lists (merged-away profiles', the id async
    intake promised its session) to the profile, so a read by that id finds it without a
    search (stores.py). Written with the profile, every time: a link is a few bytes, most
    profiles list no other id, and a link that outlived the listing (an unmerge took the id
    back) is harmless: a read follows a link only to a profile that still lists the id."""
    return [
        Operation(
            owner,
            "index",
            index,
            alias_key(other),
            codec.plain(
                {"tenant": profile.tenant, "digest": alias_key(other), "profile_id": profile.id}
            ),
        )
        for other in dict.fromkeys(profile.ids)
        if other != profile.id
    ]


def _encode(owner: int, changes: ChangeSet) -> _Encoded:
    for record_id in _document_ids(changes):
        if len(record_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise ValueError(f"id {record_id[:40]!r}… is longer than {MAX_ID_BYTES} bytes")
    encoded = _Encoded(owner, changes)
    encoded.events = [(event, codec.searchable(event)) for event in changes.events]
    encoded.sessions = [(session, codec.searchable(session)) for session in changes.sessions]
    encoded.profiles = [(profile, codec.searchable(profile)) for profile in changes.profiles]
    encoded.retired = [
        (
            gone.profile.tenant,
            gone.profile.id,
            codec.plain(
                {
                    "tenant": gone.profile.tenant,
                    "id": gone.profile.id,
                    "survivor_id": gone.survivor_id,
                    "profile": gone.profile,
                }
            ),
        )
        for gone in changes.retired
    ]
    encoded.identities = [
        (
            link.tenant,
            link.digest,
            codec.plain(
                {"tenant": link.tenant, "digest": link.digest, "profile_id": link.profile_id}
            ),
        )
        for link in changes.identities
    ]
    return encoded


def _document_ids(changes: ChangeSet) -> Iterable[str]:
    yield from (event.id for event in changes.events)
    yield from (session.id for session in changes.sessions)
    yield from (profile.id for profile in changes.profiles)
    yield from (gone.profile.id for gone in changes.retired)
    yield from (link.digest for link in changes.identities)


def _tenants(changes: ChangeSet) -> Iterable[str]:
    yield from (event.tenant for event in changes.events)
    yield from (session.tenant for session in changes.sessions)
    yield from (profile.tenant for profile in changes.profiles)
    yield from (link.tenant for link in changes.identities)
    yield from (tenant for tenant, _ in changes.released_identities)
    yield from (gone.profile.tenant for gone in changes.retired)
    yield from (tenant for tenant, _ in changes.restored)
    yield from (erasure.tenant for erasure in changes.erasures)


def _fail(batch: list[_Pending], error: StorageUnavailable | StorageRefused) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)
