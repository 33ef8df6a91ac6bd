"""Reads of the Elasticsearch record store are whole or fail (storage/elastic/reads.py).

A closed partition or a shard that cannot be read makes every read that needs it a
StorageUnavailable (503), and the writer stores nothing on top of such a read: a profile in a
partition that cannot be read now is never mistaken for a new one. A tenant that stored nothing
yet reads as empty; a request Elasticsearch refuses is not "retry later". Also: partitions are
created ahead of their first write (partitions_ahead.py).

Runs against the Elasticsearch of scripts/services (tests/support/elastic.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch

from tessera.errors import RecordRejected, StorageRefused, StorageUnavailable
from tessera.model.common import DEFAULT_TENANT
from tessera.model.profile import Profile, ProfileMetadata, ProfileTime
from tessera.storage.elastic.backend import ElasticRecordBackend
from tessera.storage.elastic.bulk import IncompleteRead
from tessera.storage.elastic.naming import Partitioning, partition
from tessera.storage.elastic.partitions_ahead import LEAD
from tessera.storage.elastic.reads import READ_RETRY_BUDGET_S, complete_search, ensure_complete
from tessera.storage.ports import ChangeSet, Erasure, IdentityLink
from tessera.storage.search import SearchRequest
from tests.contract.test_record_stores import TENANT, make_event, make_session
from tests.support.elastic import drop_created_prefixes, elastic_backend

LAST_YEAR = datetime(2025, 3, 1, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _drop_prefixes() -> Iterator[None]:
    yield
    drop_created_prefixes()


def _stored_profile(**traits: object) -> Profile:
    """A profile first seen last year: it lives in last year's partition (profiles by year)."""
    profile = Profile(
        id="p-1",
        tenant=TENANT,
        metadata=ProfileMetadata(time=ProfileTime(insert=LAST_YEAR, update=LAST_YEAR)),
        ids=["p-1"],
        traits=dict(traits),
    )
    profile.stats["events"] = 5
    profile.stats["visits"] = 2
    return profile


async def _copies(backend: ElasticRecordBackend, kind: str, record_id: str) -> list[str]:
    """Every index holding the id, through the alias (all partitions open)."""
    answer = await backend.client.search(
        index=backend.names.alias(TENANT, kind), query={"ids": {"values": [record_id]}}, size=10
    )
    return sorted(hit["_index"] for hit in answer["hits"]["hits"])


async def _close(client: AsyncElasticsearch, index: str) -> None:
    await client.indices.close(index=index)


async def _open(client: AsyncElasticsearch, index: str) -> None:
    await client.indices.open(index=index, wait_for_active_shards="all")


# --- A closed partition ----------------------------------------------------------------------


async def test_a_closed_partition_fails_every_read_that_needs_it(
    tmp_path: Path,
) -> None:
    async with elastic_backend(tmp_path) as backend:
        names, client = backend.names, backend.client
        await backend.writer.commit(
            ChangeSet(
                profiles=[_stored_profile(name="Ada")],
                sessions=[make_session("s-1")],
                events=[make_event("e-1")],
            )
        )
        profiles = names.partition_index(TENANT, "profile", "2025")
        await _close(client, profiles)
        try:
            with pytest.raises(StorageUnavailable, match="index_closed_exception"):
                await backend.profiles.get(TENANT, "p-1")
            with pytest.raises(StorageUnavailable):
                await backend.profiles.search(TENANT, SearchRequest(condition=None, limit=10))
            # Deep pages read in a point in time: the same answer.
            with pytest.raises(StorageUnavailable):
                await backend.profiles.search(
                    TENANT, SearchRequest(condition=None, limit=10, offset=20_000)
                )
            # The other kinds' partitions are open: their reads go on.
            assert await backend.sessions.get(TENANT, "s-1") is not None
            assert await backend.events.existing_ids(TENANT, ["e-1"]) == {"e-1"}
        finally:
            await _open(client, profiles)
        expected = _stored_profile(name="Ada")
        expected.metadata.partition = "2025"  # where it is kept, as a read by id tells
        assert await backend.profiles.get(TENANT, "p-1") == expected

        events = names.partition_index(TENANT, "event", "2024-05")  # make_event's time
        await _close(client, events)
        try:
            for read in (
                backend.events.get(TENANT, "e-1"),
                backend.events.existing_ids(TENANT, ["e-1"]),
                backend.events.for_profiles(TENANT, ["p-1"]),
                backend.events.search(TENANT, SearchRequest(condition=None, limit=10)),
            ):
                with pytest.raises(StorageUnavailable):
                    await read
            with pytest.raises(StorageUnavailable):
                [page async for page in backend.events.pages_for_profiles(TENANT, ["p-1"])]
        finally:
            await _open(client, events)


async def test_a_write_over_a_closed_partition_fails_and_the_profile_stays_as_it_was(
    tmp_path: Path,
) -> None:
    async with elastic_backend(tmp_path) as backend:
        names, client = backend.names, backend.client
        stored = _stored_profile(name="Ada")
        await backend.writer.commit(ChangeSet(profiles=[stored]))
        home = names.partition_index(TENANT, "profile", "2025")

        await _close(client, home)
        try:
            # The ingest path reads p-1 first: that read fails (503), it never sees "no such
            # profile", so it never writes a fresh one with the same id elsewhere.
            with pytest.raises(StorageUnavailable, match="index_closed_exception"):
                await backend.profiles.get(TENANT, "p-1")
            # A write of the profile into its closed home fails as an outage, not as a record
            # that can never be stored.
            stored.stats["events"] = 99
            with pytest.raises(StorageUnavailable) as failed:
                await backend.writer.commit(ChangeSet(profiles=[stored]))
            assert not isinstance(failed.value, RecordRejected)
            stored.stats["events"] = 5
        finally:
            await _open(client, home)

        assert await _copies(backend, "profile", "p-1") == [home]
        assert await backend.profiles.get(TENANT, "p-1") == stored
        # Once readable again, the next write updates the profile where it is.
        stored.stats["events"] = 6
        await backend.writer.commit(ChangeSet(profiles=[stored]))
        assert await _copies(backend, "profile", "p-1") == [home]
        assert await backend.profiles.get(TENANT, "p-1") == stored


async def test_a_closed_identity_index_is_not_read_as_no_links(
    tmp_path: Path,
) -> None:
    async with elastic_backend(tmp_path) as backend:
        await backend.writer.commit(
            ChangeSet(
                profiles=[_stored_profile()], identities=[IdentityLink(TENANT, "d-mail", "p-1")]
            )
        )
        assert await backend.profiles.owners(TENANT, ["d-mail"]) == {"d-mail": "p-1"}
        index = backend.names.single_index(TENANT, "identity")
        await _close(backend.client, index)
        try:
            with pytest.raises(StorageUnavailable, match="d-mail"):
                await backend.profiles.owners(TENANT, ["d-mail"])
        finally:
            await _open(backend.client, index)


async def test_an_erasure_over_a_closed_partition_fails_instead_of_skipping_it(
    tmp_path: Path,
) -> None:
    async with elastic_backend(tmp_path) as backend:
        await backend.writer.commit(
            ChangeSet(profiles=[_stored_profile()], events=[make_event("e-1")])
        )
        events = backend.names.partition_index(TENANT, "event", "2024-05")
        erasure = ChangeSet(erasures=[Erasure(TENANT, ("p-1",))])
        await _close(backend.client, events)
        try:
            # Reporting the person erased while their events stay would be the worst answer.
            with pytest.raises(StorageUnavailable):
                await backend.writer.commit(erasure)
        finally:
            await _open(backend.client, events)
        assert await backend.events.existing_ids(TENANT, ["e-1"]) == {"e-1"}

        await backend.writer.commit(erasure)
        assert await backend.events.existing_ids(TENANT, ["e-1"]) == set()
        assert await backend.profiles.get(TENANT, "p-1") is None


# --- A shard that cannot be read -------------------------------------------------------------


async def _red_partition(backend: ElasticRecordBackend) -> str:
    """A profile partition behind the alias whose shard can never be assigned (a red index)."""
    await backend.schema.ensure_tenants({TENANT})
    index = backend.names.partition_index(TENANT, "profile", "2019")
    await backend.client.indices.create(
        index=index,
        settings={"index": {"routing": {"allocation": {"require": {"_name": "no-such-node"}}}}},
        wait_for_active_shards="0",
    )
    return index


async def test_a_red_shard_fails_the_reads_and_the_writes_that_need_it(
    tmp_path: Path,
) -> None:
    async with elastic_backend(tmp_path, retry_budget_s=0.5) as backend:
        await backend.writer.commit(ChangeSet(profiles=[_stored_profile(name="Ada")]))
        await _red_partition(backend)

        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await backend.profiles.get(TENANT, "p-1")
        # Tried again for a moment (a shard may just be starting), then a 503: no hang.
        assert time.monotonic() - started < READ_RETRY_BUDGET_S + 5
        with pytest.raises(StorageUnavailable):
            await backend.profiles.search(TENANT, SearchRequest(condition=None, limit=10))
        # A write into the red partition fails; one that does not need it goes on (no
        # search over every partition comes before a write any more).
        red = _stored_profile(name="Eve")
        red.metadata.partition = "2019"
        with pytest.raises(StorageUnavailable):
            await backend.writer.commit(ChangeSet(profiles=[red]))
        await backend.writer.commit(ChangeSet(profiles=[_stored_profile(name="Ada")]))


async def test_a_write_waits_for_a_generations_index_still_starting(tmp_path: Path) -> None:
    # As when a first reshard creates the generations index while ingestion goes on: for a
    # moment its shard is not started, and reading it answers "no shard available". That
    # may pass: the writer tries again within its budget instead of failing the commit (a
    # full-suite run once failed a reshard-while-ingesting test exactly there).
    async with elastic_backend(tmp_path, retry_budget_s=20.0, generation_ttl_s=0.0) as backend:
        index = backend.names.generations_index()
        await backend.client.options(ignore_status=404).indices.delete(index=index)
        await backend.client.indices.create(
            index=index,
            settings={
                "index": {
                    "number_of_replicas": 0,
                    "routing": {"allocation": {"require": {"_name": "no-such-node"}}},
                }
            },
            wait_for_active_shards="0",
        )
        commit = asyncio.create_task(
            backend.writer.commit(ChangeSet(profiles=[_stored_profile(name="Ada")]))
        )
        await asyncio.sleep(1.5)
        assert not commit.done()  # still trying: the generations cannot be read yet
        await backend.client.indices.put_settings(
            index=index, settings={"index.routing.allocation.require._name": None}
        )
        await asyncio.wait_for(commit, timeout=20)
        stored = await backend.profiles.get(TENANT, "p-1")
        assert stored is not None and stored.traits == {"name": "Ada"}


async def test_a_read_by_id_waits_for_a_partition_still_starting(tmp_path: Path) -> None:
    # A multi-get answers a shard that is not started yet (a partition created a moment ago,
    # a reshard's new generation) with an error entry and a 200, not a 503: it is tried
    # again for a moment as a 503 would be (a reshard-while-reading test once failed there).
    async with elastic_backend(tmp_path) as backend:
        await backend.writer.commit(ChangeSet(profiles=[_stored_profile(name="Ada")]))
        starting = await _red_partition(backend)  # listed, so the read by id asks it too
        read = asyncio.create_task(backend.profiles.get(TENANT, "p-1"))
        await asyncio.sleep(0.1)
        assert not read.done()
        await backend.client.indices.put_settings(
            index=starting, settings={"index.routing.allocation.require._name": None}
        )
        found = await asyncio.wait_for(read, timeout=20)
        assert found is not None and found.traits == {"name": "Ada"}


async def test_a_partial_answer_is_refused(tmp_path: Path) -> None:
    async with elastic_backend(tmp_path) as backend:
        await backend.writer.commit(ChangeSet(profiles=[_stored_profile()]))
        red = await _red_partition(backend)
        # What Elasticsearch answers by default: a 200 made of the shards that could answer.
        partial = await backend.client.search(
            index=backend.names.alias(TENANT, "profile"), allow_partial_search_results=True
        )
        assert partial["_shards"]["failed"] > 0 and partial["hits"]["hits"]

        with pytest.raises(IncompleteRead, match=red):
            ensure_complete(partial.body, "reading profiles")


# --- Nothing stored yet; a refused request ---------------------------------------------------


async def test_a_tenant_that_stored_nothing_reads_as_empty(tmp_path: Path) -> None:
    async with elastic_backend(tmp_path) as backend:
        assert await backend.profiles.get("newcomer", "p-1") is None
        assert await backend.sessions.get("newcomer", "s-1") is None
        assert await backend.events.get("newcomer", "e-1") is None
        assert await backend.events.existing_ids("newcomer", ["e-1"]) == set()
        assert await backend.profiles.owners("newcomer", ["d-1"]) == {}
        assert await backend.profiles.retired("newcomer", "p-1") is None
        deep = SearchRequest(condition=None, limit=10, offset=20_000)
        assert (await backend.profiles.search("newcomer", deep)).total == 0
        assert (await backend.events.for_profiles("newcomer", ["p-1"])).total == 0
        # … and its first write finds nothing in the way.
        await backend.writer.commit(ChangeSet(events=[make_event("e-1", tenant="newcomer")]))
        assert await backend.events.existing_ids("newcomer", ["e-1"]) == {"e-1"}


async def test_a_request_elasticsearch_refuses_is_not_retry_later(
    tmp_path: Path,
) -> None:
    async with elastic_backend(tmp_path) as backend:
        await backend.writer.commit(ChangeSet(events=[make_event("e-1")]))
        with pytest.raises(StorageRefused, match="400") as refused:
            await complete_search(
                backend.client,
                "reading events",
                index=backend.names.alias(TENANT, "event"),
                size=20_000,  # beyond index.max_result_window: Elasticsearch answers 400
            )
        assert not isinstance(refused.value, StorageUnavailable)
        assert refused.value.status_code == 500


# --- Partitions ahead ------------------------------------------------------------------------


async def test_start_creates_the_partitions_of_now_and_of_the_near_future(
    tmp_path: Path,
) -> None:
    async with elastic_backend(tmp_path) as backend:
        names, client = backend.names, backend.client
        now = datetime.now(UTC)
        partitioned: list[tuple[str, Partitioning]] = [
            ("event", "month"),
            ("session", "quarter"),
            ("profile", "year"),
        ]
        expected = {
            names.partition_index(DEFAULT_TENANT, kind, partition(moment, every))
            for kind, every in partitioned
            for moment in (now, now + LEAD)
        } | {names.single_index(DEFAULT_TENANT, kind) for kind in ("identity", "retired")}
        indices = await client.indices.get(index=names.tenant_indices(DEFAULT_TENANT))
        assert set(indices.body) == expected
        # Created behind their aliases, shards started: readable at once, and empty.
        health = await client.cluster.health(index=",".join(sorted(expected)))
        assert health["status"] in ("green", "yellow")
        assert await backend.profiles.get(DEFAULT_TENANT, "p-1") is None

        # The background step creates the next partitions as time moves on, once.
        later = now + timedelta(days=400)
        created = await backend.partitions_ahead.prepare({DEFAULT_TENANT, TENANT}, later)
        assert names.partition_index(DEFAULT_TENANT, "profile", partition(later, "year")) in (
            created
        )
        assert names.partition_index(TENANT, "event", partition(later, "month")) in created
        assert await backend.partitions_ahead.prepare({DEFAULT_TENANT, TENANT}, later) == []
        aliases = await client.indices.get_alias(name=names.alias(TENANT, "event"))
        assert names.partition_index(TENANT, "event", partition(later, "month")) in aliases


async def test_the_background_step_prepares_every_tenant_this_process_wrote_for(
    tmp_path: Path,
) -> None:
    async with elastic_backend(tmp_path, ahead_interval_s=0.2) as backend:
        names = backend.names
        # A write for another tenant creates only the partition of its event (May 2024) …
        await backend.writer.commit(ChangeSet(events=[make_event("e-1")]))
        now = datetime.now(UTC)
        current = names.partition_index(TENANT, "event", partition(now, "month"))
        # … and the next check creates that tenant's partitions of now, ahead of any write
        # (one after the other: each is waited for until the check has made them all).
        wanted = [current, names.partition_index(TENANT, "profile", partition(now, "year"))]
        deadline = time.monotonic() + 10
        for index in wanted:
            while not await backend.client.indices.exists(index=index):
                assert time.monotonic() < deadline, f"{index} was not created"
                await asyncio.sleep(0.1)
