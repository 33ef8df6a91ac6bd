"""What only the Elasticsearch record backend has: index shapes from settings, time partitions,
one copy of a record across partitions, and what happens when the cluster is away.

Runs against the Elasticsearch of scripts/services (tests/support/elastic.py); skipped, loudly,
only when it cannot be reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from tessera.errors import RecordRejected, StorageUnavailable
from tessera.model.event import Event
from tessera.model.profile import Profile, ProfileMetadata, ProfileTime
from tessera.settings import Settings
from tessera.storage.elastic import codec
from tessera.storage.elastic.backend import ElasticRecordBackend, build_elastic_records
from tessera.storage.elastic.bulk import Operation, Retrier, send
from tessera.storage.elastic.naming import Names, partition, tenant_part
from tessera.storage.ports import ChangeSet
from tests.contract.test_record_stores import TENANT, make_event, make_profile, make_session
from tests.support.elastic import (
    URL,
    claim_prefix,
    drop_created_prefixes,
    elastic_backend,
    make_backend,
    require_elastic,
)
from tests.support.tcp_proxy import TcpRelay


@pytest.fixture(autouse=True)
def _drop_prefixes() -> Iterator[None]:
    yield
    drop_created_prefixes()


@pytest.fixture
def elastic() -> None:
    require_elastic()


async def _copies(backend: ElasticRecordBackend, kind: str, record_id: str) -> list[str]:
    """The indices holding a document with this id, through the tenant's alias."""
    answer = await backend.client.search(
        index=backend.names.alias(TENANT, kind), query={"ids": {"values": [record_id]}}, size=10
    )
    return sorted(hit["_index"] for hit in answer["hits"]["hits"])


# --- Names and partitions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "every", "suffix"),
    [
        (datetime(2024, 3, 7, 10, tzinfo=UTC), "year", "2024"),
        (datetime(2024, 3, 7, 10, tzinfo=UTC), "quarter", "2024-q1"),
        (datetime(2024, 10, 1, tzinfo=UTC), "quarter", "2024-q4"),
        (datetime(2024, 3, 7, 10, tzinfo=UTC), "month", "2024-03"),
        (datetime(2024, 2, 29, 10, tzinfo=UTC), "week", "2024-w09"),
        (datetime(2024, 3, 7, 10, tzinfo=UTC), "day", "2024-03-07"),
        # ISO weeks carry the ISO year: these days belong to the neighbouring year's week.
        (datetime(2024, 12, 30, tzinfo=UTC), "week", "2025-w01"),
        (datetime(2021, 1, 3, tzinfo=UTC), "week", "2020-w53"),
        # Partitions are cut in UTC: 23:30 at -02:00 on 31 March is 1 April, a new quarter.
        (datetime(2024, 3, 31, 23, 30, tzinfo=timezone(-timedelta(hours=2))), "quarter", "2024-q2"),
        (datetime(2024, 3, 31, 23, 30, tzinfo=timezone(-timedelta(hours=2))), "day", "2024-04-01"),
    ],
)
def test_partition_suffixes(moment: datetime, every: Any, suffix: str) -> None:
    assert partition(moment, every) == suffix


def test_names_carry_prefix_tenant_kind_and_version() -> None:
    names = Names("tessera")
    assert names.alias("acme", "event") == "tessera.acme.event"
    assert names.partition_index("acme", "event", "2024-03") == "tessera.acme.event.v1-2024-03"
    assert names.single_index("acme", "identity") == "tessera.acme.identity.v1"
    # A tenant id that is not a plain index-name word gets an unambiguous spelling.
    assert tenant_part("Acme Corp") == "t+" + b"Acme Corp".hex()
    assert tenant_part("a.b") != tenant_part("a-b")
    with pytest.raises(ValueError, match="index prefix"):
        Names("Bad.Prefix")


async def test_each_granularity_names_the_event_indices(elastic: None, tmp_path: Path) -> None:
    times = [
        datetime(2024, 2, 28, 12, tzinfo=UTC),
        datetime(2024, 3, 1, 12, tzinfo=UTC),
        datetime(2024, 12, 30, 12, tzinfo=UTC),
    ]
    expected = {
        "year": ["2024"],
        "quarter": ["2024-q1", "2024-q4"],
        "month": ["2024-02", "2024-03", "2024-12"],
        "week": ["2024-w09", "2025-w01"],
        "day": ["2024-02-28", "2024-03-01", "2024-12-30"],
    }
    for every, suffixes in expected.items():
        partitioning: Any = {"event": every, "session": "year", "profile": "year"}
        async with elastic_backend(tmp_path / every, partitioning=partitioning) as backend:
            events = [_arrived(f"e-{i}", moment) for i, moment in enumerate(times)]
            await backend.writer.commit(ChangeSet(events=events))

            aliases = await backend.client.indices.get_alias(
                name=backend.names.alias(TENANT, "event")
            )
            wanted = [backend.names.partition_index(TENANT, "event", s) for s in suffixes]
            assert sorted(aliases.body) == wanted, every
            page = await backend.events.for_profiles(TENANT, ["p-1"])
            assert [event.id for event in page.items] == ["e-2", "e-1", "e-0"], every


async def test_far_off_event_times_do_not_make_partitions_of_their_own(
    elastic: None, tmp_path: Path
) -> None:
    # A client may send any time; partitions stay within bounds around the arrival time.
    arrival = datetime(2024, 5, 1, 12, tzinfo=UTC)
    partitioning: Any = {"event": "day", "session": "year", "profile": "year"}
    async with elastic_backend(tmp_path, partitioning=partitioning) as backend:
        events = [
            _arrived("e-1970", datetime(1970, 1, 1, tzinfo=UTC), arrival),
            _arrived("e-2099", datetime(2099, 1, 1, tzinfo=UTC), arrival),
            _arrived("e-backfill", datetime(2023, 2, 1, tzinfo=UTC), arrival),
        ]
        await backend.writer.commit(ChangeSet(events=events))

        aliases = await backend.client.indices.get_alias(name=backend.names.alias(TENANT, "event"))
        suffixes = sorted(name.split(".v1-")[1] for name in aliases.body)
        # 1970 counts as two years (2 * 366 days) before arrival, 2099 as one day after it.
        assert suffixes == ["2022-04-30", "2023-02-01", "2024-05-02"]
        # The events keep their own times.
        page = await backend.events.for_profiles(TENANT, ["p-1"])
        assert [(event.id, event.time.year) for event in page.items] == [
            ("e-2099", 2099),
            ("e-backfill", 2023),
            ("e-1970", 1970),
        ]


def _arrived(event_id: str, moment: datetime, arrival: datetime | None = None) -> Event:
    """An event that happened at `moment` and arrived then (or at `arrival`)."""
    event = make_event(event_id, time=moment)
    event.metadata.insert = arrival or moment + timedelta(seconds=1)
    return event


# --- Index shapes from settings -----------------------------------------------------------------


async def test_shards_and_replicas_come_from_the_settings(elastic: None, tmp_path: Path) -> None:
    settings = Settings(
        ELASTIC_HOST=URL,
        TESSERA_ELASTIC_INDEX_PREFIX=claim_prefix(tmp_path),
        ELASTIC_INDEX_SHARDS=2,
        ELASTIC_INDEX_REPLICAS=0,
        TESSERA_ELASTIC_EVENT_SHARDS=3,
        TESSERA_ELASTIC_SESSION_REPLICAS=1,
        TESSERA_ELASTIC_PROFILE_SHARDS=1,
    )
    backend = build_elastic_records(settings)
    await backend.start()
    try:
        await backend.writer.commit(
            ChangeSet(
                events=[make_event("e-1")],
                sessions=[make_session("s-1")],
                profiles=[make_profile("p-1")],
                retired=[],
            )
        )
        answer = await backend.client.indices.get_settings(index=backend.names.everything())
        shapes = {
            name.split(".")[2]: (
                int(body["settings"]["index"]["number_of_shards"]),
                int(body["settings"]["index"]["number_of_replicas"]),
            )
            for name, body in answer.body.items()
        }
    finally:
        await backend.close()

    # Also the default tenant's indices made at start (partitions_ahead.py) have the shapes
    # of the templates; identity links and retired profiles are sized like the profiles.
    assert shapes == {
        "event": (3, 0),
        "session": (2, 1),
        "profile": (1, 0),
        "identity": (1, 0),
        "retired": (1, 0),
    }


# --- One copy of each record --------------------------------------------------------------------


def _profile_first_seen(first_seen: datetime, **traits: Any) -> Profile:
    return Profile(
        id="p-moving",
        tenant=TENANT,
        metadata=ProfileMetadata(time=ProfileTime(insert=first_seen, update=datetime.now(UTC))),
        ids=["p-moving"],
        traits=traits,
    )


async def test_a_profile_stays_in_the_partition_it_was_created_in(
    elastic: None, tmp_path: Path
) -> None:
    async with elastic_backend(tmp_path) as backend:  # profiles by year
        names = backend.names
        created = _profile_first_seen(datetime(2023, 12, 31, 23, tzinfo=UTC), v=1)
        await backend.writer.commit(ChangeSet(profiles=[created]))
        home = names.partition_index(TENANT, "profile", "2023")
        assert await _copies(backend, "profile", "p-moving") == [home]
        # The record notes its home; a read by id tells it too.
        assert created.metadata.partition == "2023"
        read = await backend.profiles.get(TENANT, "p-moving")
        assert read is not None
        assert read.metadata.partition == "2023"

        # Updated now (another year), and after a merge that took an older first-seen time:
        # the profile is updated where it is, never written into a second partition.
        read.traits = {"v": 2}
        await backend.writer.commit(ChangeSet(profiles=[read]))
        merged = await backend.profiles.get(TENANT, "p-moving")
        assert merged is not None
        merged.metadata.time.insert = datetime(2021, 6, 1, tzinfo=UTC)
        merged.traits = {"v": 3}
        await backend.writer.commit(ChangeSet(profiles=[merged]))

        assert await _copies(backend, "profile", "p-moving") == [home]
        assert await backend.profiles.get(TENANT, "p-moving") == merged


async def test_a_stray_copy_in_another_partition_does_not_hide_the_record(
    elastic: None, tmp_path: Path
) -> None:
    async with elastic_backend(tmp_path) as backend:
        names = backend.names
        await backend.writer.commit(
            ChangeSet(profiles=[_profile_first_seen(datetime(2023, 5, 1, tzinfo=UTC), v=1)])
        )
        # A second, older copy, as an older version of Tessera or a hand-made restore might
        # leave: the record is the copy changed last, and it is written where it lives.
        stray = names.partition_index(TENANT, "profile", "2025")
        await backend.client.index(
            index=stray, id="p-moving", document={"id": "p-moving"}, refresh=True
        )
        backend.partitions.forget()
        assert len(await _copies(backend, "profile", "p-moving")) == 2

        latest = await backend.profiles.get(TENANT, "p-moving")
        assert latest is not None
        assert latest.traits == {"v": 1}
        latest.traits = {"v": 2}
        await backend.writer.commit(ChangeSet(profiles=[latest]))

        got = await backend.profiles.get(TENANT, "p-moving")
        assert got is not None
        assert (got.traits, got.metadata.partition) == ({"v": 2}, "2023")


async def test_an_event_repeated_in_its_partition_is_stored_once(
    elastic: None, tmp_path: Path
) -> None:
    async with elastic_backend(tmp_path) as backend:  # events by month
        moment = datetime.now(UTC)
        first = make_event("e-again", time=moment, properties={"v": 1})
        later = make_event("e-again", time=moment, properties={"v": 2})
        first.metadata.insert = later.metadata.insert = moment  # arrived now
        await backend.writer.commit(ChangeSet(events=[first]))
        await backend.writer.commit(ChangeSet(events=[later]))

        assert len(await _copies(backend, "event", "e-again")) == 1
        assert await backend.events.get(TENANT, "e-again") == first
        assert await backend.events.get(TENANT, "e-again", moment=moment) == first
        assert await backend.events.existing_ids(
            TENANT, ["e-again", "e-other"], moments={"e-again": moment, "e-other": moment}
        ) == {"e-again"}


async def test_reads_by_id_see_writes_that_no_refresh_made_searchable(
    elastic: None, tmp_path: Path
) -> None:
    """The production default: bulks do not refresh, and the partitions refresh never
    (`-1`) here, so only a realtime read by id can see what was written."""
    never = dict.fromkeys(("event", "session", "profile", "identity", "retired"), "-1")
    async with elastic_backend(tmp_path, refresh="false", refresh_intervals=never) as backend:
        moment = datetime.now(UTC)
        profile = make_profile("p-fresh", ids=["p-fresh", "p-promised"])
        session = make_session("s-fresh")
        event = make_event("e-fresh", time=moment)
        event.metadata.insert = moment  # arrived now
        await backend.writer.commit(
            ChangeSet(profiles=[profile], sessions=[session], events=[event])
        )

        assert await _copies(backend, "profile", "p-fresh") == []  # not searchable yet
        assert await backend.profiles.get(TENANT, "p-fresh") == profile
        assert await backend.profiles.get(TENANT, "p-promised") == profile
        assert await backend.sessions.get(TENANT, "s-fresh") == session
        assert await backend.events.existing_ids(
            TENANT, ["e-fresh"], moments={"e-fresh": moment}
        ) == {"e-fresh"}


async def test_a_deleted_partition_comes_back_under_the_alias(
    elastic: None, tmp_path: Path
) -> None:
    # Retention may delete a partition; a late event for it must still be readable.
    async with elastic_backend(tmp_path) as backend:
        await backend.writer.commit(ChangeSet(events=[make_event("e-1")]))
        index = backend.names.partition_index(TENANT, "event", "2024-05")
        await backend.client.indices.delete(index=index)

        await backend.writer.commit(ChangeSet(events=[make_event("e-late")]))

        assert await backend.events.existing_ids(TENANT, ["e-1", "e-late"]) == {"e-late"}
        assert await _copies(backend, "event", "e-late") == [index]


# --- Refused records and an unreachable cluster -------------------------------------------------


async def test_a_record_elasticsearch_refuses_fails_only_its_caller(
    elastic: None, tmp_path: Path
) -> None:
    async with elastic_backend(tmp_path) as backend:
        # Elasticsearch refuses document ids over 512 bytes (a 400 for that item only).
        refused = make_event("x" * 600)
        results = await asyncio.gather(
            backend.writer.commit(ChangeSet(events=[make_event("e-a")])),
            backend.writer.commit(ChangeSet(events=[refused])),
            backend.writer.commit(ChangeSet(events=[make_event("e-b")])),
            return_exceptions=True,
        )

        assert results[0] is None and results[2] is None
        # Refused for what it is: a retry cannot help, so it is not "come back later".
        assert isinstance(results[1], RecordRejected)
        assert "512" in str(results[1])
        assert await backend.events.existing_ids(TENANT, ["e-a", "e-b"]) == {"e-a", "e-b"}


async def test_an_item_elasticsearch_refuses_fails_only_its_caller(
    elastic: None, tmp_path: Path
) -> None:
    async with elastic_backend(tmp_path) as backend:
        # `events` is a long in the mapping: Elasticsearch refuses this one item with a 400.
        refused = make_session("s-huge", events=2**70)
        before = backend.writer.bulk_requests
        results = await asyncio.gather(
            backend.writer.commit(ChangeSet(sessions=[make_session("s-a")])),
            backend.writer.commit(ChangeSet(sessions=[refused], events=[make_event("e-x")])),
            backend.writer.commit(ChangeSet(sessions=[make_session("s-b")])),
            return_exceptions=True,
        )

        # One bulk per phase served all three: the events, then the sessions.
        assert backend.writer.bulk_requests - before == 2
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], RecordRejected)
        assert "400" in str(results[1])
        assert await backend.sessions.get(TENANT, "s-a") is not None
        assert await backend.sessions.get(TENANT, "s-b") is not None
        assert await backend.sessions.get(TENANT, "s-huge") is None


async def test_a_bulk_refused_as_a_whole_is_split_by_caller(elastic: None, tmp_path: Path) -> None:
    # A validation error of one item makes Elasticsearch refuse the whole request; the other
    # callers' operations are then sent again on their own.
    async with elastic_backend(tmp_path) as backend:
        await backend.schema.ensure_tenants({TENANT})  # what the writer does before a bulk
        index = backend.names.partition_index(TENANT, "event", "2024-05")
        operations = [
            Operation(0, "create", index, "e-a", codec.searchable(make_event("e-a"))),
            Operation(1, "create", index, "x" * 600, codec.searchable(make_event("e-b"))),
            Operation(2, "create", index, "e-c", codec.searchable(make_event("e-c"))),
        ]

        failures = await send(
            backend.client, operations, refresh="true", retrier=Retrier(budget_s=1.0)
        )

        assert list(failures) == [1]
        assert "400" in failures[1]
        assert await backend.events.existing_ids(TENANT, ["e-a", "e-c"]) == {"e-a", "e-c"}


async def test_start_fails_clearly_while_the_cluster_is_away_and_works_once_it_is_back(
    elastic: None, tmp_path: Path
) -> None:
    relay = TcpRelay("127.0.0.1", int(URL.rsplit(":", 1)[1]))  # nothing listens on it yet
    backend = make_backend(tmp_path, url=relay.url, retry_budget_s=0.5)
    try:
        with pytest.raises(StorageUnavailable) as failure:
            await backend.start()
        assert relay.url in str(failure.value)
        with pytest.raises(StorageUnavailable):
            await backend.writer.commit(ChangeSet(events=[make_event("e-never")]))

        await relay.up()
        await backend.start()
        await backend.writer.commit(ChangeSet(events=[make_event("e-1")]))
        assert await backend.events.existing_ids(TENANT, ["e-1"]) == {"e-1"}
    finally:
        await backend.close()
        await relay.down()


async def test_the_writer_rides_out_a_short_outage_and_reports_a_long_one(
    elastic: None, tmp_path: Path
) -> None:
    relay = TcpRelay("127.0.0.1", int(URL.rsplit(":", 1)[1]))
    await relay.up()
    backend = make_backend(tmp_path, url=relay.url, retry_budget_s=3.0)
    await backend.start()
    try:
        await backend.writer.commit(ChangeSet(events=[make_event("e-before")]))

        # Short: the cluster is back within the retry budget, the commit succeeds.
        await relay.down()
        pending = asyncio.ensure_future(
            backend.writer.commit(ChangeSet(events=[make_event("e-during")]))
        )
        await asyncio.sleep(0.3)
        assert not pending.done()
        await relay.up()
        async with asyncio.timeout(10):
            await pending

        # Long: past the budget the caller hears StorageUnavailable, nothing hangs …
        await relay.down()
        with pytest.raises(StorageUnavailable):
            async with asyncio.timeout(10):
                await backend.writer.commit(ChangeSet(events=[make_event("e-lost")]))

        # … and the next commit after the cluster is back is stored.
        await relay.up()
        await backend.writer.commit(ChangeSet(events=[make_event("e-after")]))
        found = await backend.events.existing_ids(
            TENANT, ["e-before", "e-during", "e-lost", "e-after"]
        )
        assert found == {"e-before", "e-during", "e-after"}
    finally:
        await backend.close()
        await relay.down()


async def test_templates_carry_the_alias_and_version(elastic: None, tmp_path: Path) -> None:
    async with elastic_backend(tmp_path) as backend:
        assert await backend.installed_version() == 1
        await backend.writer.commit(ChangeSet(profiles=[make_profile("p-1")]))
        client: AsyncElasticsearch = backend.client
        answer = await client.indices.get_index_template(
            name=backend.names.index_template(TENANT, "profile")
        )
        template = answer["index_templates"][0]["index_template"]
        assert template["index_patterns"] == [backend.names.index_pattern(TENANT, "profile")]
        assert backend.names.alias(TENANT, "profile") in template["template"]["aliases"]

        mapping = await client.indices.get_mapping(index=backend.names.alias(TENANT, "profile"))
        properties = next(iter(mapping.body.values()))["mappings"]["properties"]
        # Free-form parts are stored, not indexed: no field per trait.
        assert properties["traits"] == {"type": "object", "enabled": False}
        # Search goes through fixed fields on the document itself: no nested documents.
        assert properties["sk"]["type"] == "keyword" and properties["so"]["type"] == "flattened"
        assert "sx" not in properties
