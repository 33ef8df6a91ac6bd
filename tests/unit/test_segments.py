"""Segments: live membership on a profile document, and the re-segmentation job over real
SQLite stores (configuration and records)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tessera.core.cache import RecordCache
from tessera.core.locks import KeyedLocks
from tessera.identity.visitor import VisitorDirectory
from tessera.model.profile import Profile, new_profile
from tessera.model.segment import SEGMENT_ENTERED, SEGMENT_LEFT, SEGMENTATION_SOURCE, Segment
from tessera.model.session import Session
from tessera.segments.job import ResegmentationJobs
from tessera.segments.live import LiveSegments
from tessera.storage.ports import ChangeSet
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.segments import SqlSegmentStore
from tessera.storage.sql.stores import SqlSchemaStore
from tests.contract.conftest import RecordBackend, sqlite_records
from tests.support.visitors import TEST_IDS, erased_profiles

TENANT = "default"
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def segment(
    segment_id: str,
    condition: str,
    *,
    event_types: list[str] | None = None,
    enabled: bool = True,
    version: int = 1,
) -> Segment:
    return Segment(
        tenant=TENANT,
        id=segment_id,
        name=f"Segment {segment_id}",
        created=CREATED,
        condition=condition,
        event_types=event_types or [],
        enabled=enabled,
        version=version,
    )


def profile_doc(segments: list[str] | None = None, **traits: Any) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(new_profile("p-1", TENANT, CREATED))
    document["traits"] = traits
    document["segments"] = list(segments or [])
    return document


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlSegmentStore]:
    engine = sqlite_engine(tmp_path / "config")
    await SqlSchemaStore(engine).create_schema()
    try:
        yield SqlSegmentStore(engine)
    finally:
        await engine.dispose()


# --- Live segmentation -----------------------------------------------------------------------


async def test_a_profile_enters_stays_and_leaves(store: SqlSegmentStore) -> None:
    await store.save(segment("pro", "profile@traits.plan == 'pro'"))
    live = LiveSegments(store, ttl_s=60)
    profile = profile_doc(plan="pro")

    entered = await live.apply(TENANT, profile, ["page-view"])
    assert (entered.entered, entered.left) == (["pro"], [])
    assert entered.names == {"pro": "Segment pro"}
    assert profile["segments"] == ["pro"]

    stayed = await live.apply(TENANT, profile, ["page-view"])
    assert not stayed and stayed.entered == stayed.left == []
    assert profile["segments"] == ["pro"]

    profile["traits"]["plan"] = "free"
    left = await live.apply(TENANT, profile, ["page-view"])
    assert (left.entered, left.left) == ([], ["pro"])
    assert left.names == {"pro": "Segment pro"}
    assert profile["segments"] == []


async def test_event_types_decide_when_a_segment_is_evaluated(store: SqlSegmentStore) -> None:
    await store.save(segment("buyers", "profile@stats.orders >= 1", event_types=["purchase"]))
    await store.save(segment("everyone", "profile@stats.orders EXISTS"))
    live = LiveSegments(store, ttl_s=60)
    profile = profile_doc()
    profile["stats"]["orders"] = 2

    change = await live.apply(TENANT, profile, ["page-view"])
    assert change.entered == ["everyone"]
    assert profile["segments"] == ["everyone"]

    change = await live.apply(TENANT, profile, ["page-view", "purchase"])
    assert change.entered == ["buyers"]
    assert profile["segments"] == ["everyone", "buyers"]

    # Leaving is also only decided on a request of the segment's types.
    profile["stats"]["orders"] = 0
    assert not await live.apply(TENANT, profile, ["page-view"])
    assert "buyers" in profile["segments"]
    assert (await live.apply(TENANT, profile, ["purchase"])).left == ["buyers"]
    assert profile["segments"] == ["everyone"]


async def test_manual_disabled_and_deleted_ids_are_left_alone(store: SqlSegmentStore) -> None:
    await store.save(segment("pro", "profile@traits.plan == 'pro'"))
    await store.save(segment("off", "profile@traits.plan == 'pro'", enabled=False))
    live = LiveSegments(store, ttl_s=60)
    # "vip" was added by a workflow, "gone" belonged to a deleted segment, "off" is disabled:
    # none of them matches, none of them is removed.
    profile = profile_doc(["vip", "gone", "off", "pro"], plan="free")

    change = await live.apply(TENANT, profile, ["identify"])
    assert (change.entered, change.left) == ([], ["pro"])
    assert profile["segments"] == ["vip", "gone", "off"]

    profile["traits"]["plan"] = "pro"
    change = await live.apply(TENANT, profile, ["identify"])
    assert change.entered == ["pro"]
    assert profile["segments"] == ["vip", "gone", "off", "pro"]
    assert await live.segment_names(TENANT) == {"pro": "Segment pro", "off": "Segment off"}


async def test_a_profile_without_a_segments_list_gets_one(store: SqlSegmentStore) -> None:
    await store.save(segment("all", "profile@traits.plan IS NOT NULL"))
    live = LiveSegments(store, ttl_s=60)
    profile = profile_doc(plan="x")
    del profile["segments"]
    assert (await live.apply(TENANT, profile, [])).entered == ["all"]
    assert profile["segments"] == ["all"]


async def test_segments_are_cached_until_forgotten(store: SqlSegmentStore) -> None:
    live = LiveSegments(store, ttl_s=3600)
    profile = profile_doc(plan="pro")
    assert not await live.apply(TENANT, profile, ["identify"])

    await store.save(segment("pro", "profile@traits.plan == 'pro'"))
    # Cached: the new segment is not read per event.
    assert not await live.apply(TENANT, profile, ["identify"])
    live.forget(TENANT)
    assert (await live.apply(TENANT, profile, ["identify"])).entered == ["pro"]

    # An edit (a new version) is parsed again once forgotten.
    await store.save(segment("pro", "profile@traits.plan == 'enterprise'", version=2))
    live.forget(TENANT)
    assert (await live.apply(TENANT, profile, ["identify"])).left == ["pro"]

    # Another tenant's segments are separate.
    other = profile_doc(plan="pro")
    assert not await live.apply("other", other, ["identify"])


async def test_a_stored_condition_that_does_not_parse_is_skipped(store: SqlSegmentStore) -> None:
    await store.save(segment("broken", "profile@traits.plan =="))
    await store.save(segment("pro", "profile@traits.plan == 'pro'"))
    live = LiveSegments(store, ttl_s=60)
    profile = profile_doc(plan="pro")
    assert (await live.apply(TENANT, profile, [])).entered == ["pro"]


# --- Re-segmentation job ---------------------------------------------------------------------


@dataclass
class World:
    records: RecordBackend
    store: SqlSegmentStore
    live: LiveSegments
    visitors: VisitorDirectory
    jobs: ResegmentationJobs


@pytest.fixture
async def world(tmp_path: Path, store: SqlSegmentStore) -> AsyncIterator[World]:
    async with (
        sqlite_records(tmp_path / "records") as records,
        erased_profiles(tmp_path / "erased") as erased,
    ):
        visitors = VisitorDirectory(
            records.profiles,
            records.sessions,
            profile_cache=RecordCache(Profile, max_entries=1000, ttl_s=600),
            session_cache=RecordCache(Session, max_entries=1000, ttl_s=600),
            ids=TEST_IDS,
            erased=erased,
        )
        live = LiveSegments(store, ttl_s=600)
        jobs = ResegmentationJobs(
            live, records.profiles, visitors, records.writer, KeyedLocks(), page_size=3
        )
        yield World(records, store, live, visitors, jobs)
        await jobs.stop()


async def write_profiles(world: World, plans: dict[str, str], segments: list[str]) -> None:
    profiles: list[Profile] = []
    for profile_id, plan in plans.items():
        profile = new_profile(profile_id, TENANT, CREATED)
        profile.traits["plan"] = plan
        profile.segments = list(segments)
        profiles.append(profile)
    await world.records.writer.commit(ChangeSet(profiles=profiles))


async def segments_of(world: World, profile_id: str) -> list[str]:
    profile = await world.records.profiles.get(TENANT, profile_id)
    assert profile is not None
    return profile.segments


async def history(world: World, profile_id: str, event_type: str) -> list[dict[str, Any]]:
    page = await world.records.events.for_profiles(TENANT, [profile_id], event_type=event_type)
    for event in page.items:
        assert event.source.id == SEGMENTATION_SOURCE
        assert event.metadata.status == "internal"
        assert event.profile is not None and event.profile.id == profile_id
    return [event.properties for event in page.items]


async def test_the_job_puts_matching_profiles_in_and_takes_the_others_out(world: World) -> None:
    plans = {f"p-{n}": ("pro" if n % 2 == 0 else "free") for n in range(7)}
    # Every profile starts "in" the segment (a stale state) with a manual id beside it.
    await write_profiles(world, plans, ["vip", "pro"])
    await world.store.save(segment("pro", "profile@traits.plan == 'pro'"))

    started = world.jobs.start(TENANT, "pro")
    assert started.state == "running" and started.segment_id == "pro"
    job = await world.jobs.wait(started.id)

    assert job is not None and job.state == "done", job
    assert (job.total, job.processed) == (7, 7)
    free = [pid for pid, plan in plans.items() if plan == "free"]
    assert (job.changed, job.entered, job.left) == (len(free), 0, len(free))
    assert job.finished is not None and job.error is None
    for profile_id, plan in plans.items():
        expected = ["vip", "pro"] if plan == "pro" else ["vip"]
        assert await segments_of(world, profile_id) == expected
        # The visitor cache answers what was committed.
        cached = await world.visitors.profile(TENANT, profile_id)
        assert cached is not None and cached.segments == expected
        left = await history(world, profile_id, SEGMENT_LEFT)
        assert left == ([{"segment": "pro", "name": "Segment pro"}] if plan == "free" else [])
    assert world.jobs.list(TENANT) == [job]


async def test_entering_records_events_and_a_second_run_changes_nothing(world: World) -> None:
    await write_profiles(world, {"a": "pro", "b": "free", "c": "pro"}, [])
    await world.store.save(segment("pro", "profile@traits.plan == 'pro'"))

    first = await world.jobs.wait(world.jobs.start(TENANT, "pro").id)
    assert first is not None and (first.state, first.changed, first.entered) == ("done", 2, 2)
    assert await segments_of(world, "a") == ["pro"]
    assert await segments_of(world, "b") == []
    assert await history(world, "a", SEGMENT_ENTERED) == [{"segment": "pro", "name": "Segment pro"}]
    assert await history(world, "b", SEGMENT_ENTERED) == []

    again = await world.jobs.wait(world.jobs.start(TENANT, "pro").id)
    assert again is not None and (again.state, again.processed, again.changed) == ("done", 3, 0)
    assert len(await history(world, "a", SEGMENT_ENTERED)) == 1


async def test_disabling_or_deleting_takes_the_id_off_every_profile(world: World) -> None:
    await write_profiles(world, {"a": "pro", "b": "pro"}, ["pro", "old", "vip"])
    await world.store.save(segment("pro", "profile@traits.plan == 'pro'", enabled=False))

    job = await world.jobs.wait(world.jobs.start(TENANT, "pro").id)
    assert job is not None and (job.changed, job.left) == (2, 2)
    assert await segments_of(world, "a") == ["old", "vip"]

    # "old" no longer exists; the name given at start names it in the history.
    job = await world.jobs.wait(world.jobs.start(TENANT, "old", name="Old segment").id)
    assert job is not None and (job.state, job.changed, job.left) == ("done", 2, 2)
    assert await segments_of(world, "b") == ["vip"]
    left = await history(world, "b", SEGMENT_LEFT)
    assert sorted(left, key=lambda p: str(p["segment"])) == [
        {"segment": "old", "name": "Old segment"},
        {"segment": "pro", "name": "Segment pro"},
    ]


async def test_a_job_for_every_segment(world: World) -> None:
    await write_profiles(world, {"a": "pro", "b": "free"}, ["off"])
    await world.store.save(segment("pro", "profile@traits.plan == 'pro'"))
    await world.store.save(segment("free", "profile@traits.plan == 'free'"))
    await world.store.save(segment("off", "profile@traits.plan IS NOT NULL", enabled=False))

    job = await world.jobs.wait(world.jobs.start(TENANT, None).id)
    assert job is not None and (job.state, job.changed, job.entered, job.left) == (
        "done",
        2,
        2,
        2,
    )
    assert await segments_of(world, "a") == ["pro"]
    assert await segments_of(world, "b") == ["free"]


async def test_a_newer_job_for_the_same_segment_supersedes_a_running_one(world: World) -> None:
    await write_profiles(world, {"a": "pro"}, [])
    await world.store.save(segment("pro", "profile@traits.plan == 'pro'"))
    older = world.jobs.start(TENANT, "pro")
    newer = world.jobs.start(TENANT, "pro")
    await world.jobs.wait(older.id)
    await world.jobs.wait(newer.id)
    assert older.state == "cancelled" and older.error == f"superseded by job {newer.id}"
    assert (newer.state, newer.changed) == ("done", 1)
    assert await segments_of(world, "a") == ["pro"]
    assert [j.id for j in world.jobs.list(TENANT)] == [newer.id, older.id]


async def test_an_empty_tenant_finishes_at_once(world: World) -> None:
    job = await world.jobs.wait(world.jobs.start("nobody", None).id)
    assert job is not None and (job.state, job.total, job.processed) == ("done", 0, 0)
