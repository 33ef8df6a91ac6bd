"""Two API processes sharing one store, one Redis cache and Redis locks: a merge or an erasure
made by one is never answered stale by the other.

Each "process" is its own ingest path (its own VisitorDirectory, RedisLocks and Redis
connection) over the real runtime's store and workflow stage. The merge is the one a workflow
asks for when two sessions log in with the same customer id. A control run with two separate
in-process caches shows the same steps do leave a stale profile when nothing is shared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tessera.core.cache import RecordCache, RecordCachePort
from tessera.core.locks import KeyedLocks, Locks
from tessera.identity.operations import ProfileOperations
from tessera.identity.visitor import VisitorDirectory
from tessera.model.common import DEFAULT_TENANT
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.pipeline.ingest import Ingestor
from tessera.pipeline.request import IncomingBatch, IncomingEvent
from tessera.runtime import Runtime
from tessera.storage.ports import ChangeSet, RecordWriter
from tessera.storage.redis.services import redis_services
from tests.support.merge_workflow import login, merging_runtime
from tests.support.redis_service import new_client, reachable_client, unique_prefix


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with merging_runtime(tmp_path) as running:
        yield running


@dataclass
class Process:
    visitors: VisitorDirectory
    ingestor: Ingestor
    operations: ProfileOperations


class DiesAfterCommit:
    """The store's writer in a process that is killed the moment its commit is durable:
    nothing the caller meant to do after the commit (putting the records back in the cache)
    happens. Raising stands for SIGKILL, which would stop the process at the same point."""

    def __init__(self, writer: RecordWriter) -> None:
        self._writer = writer

    async def commit(self, changes: ChangeSet) -> None:
        await self._writer.commit(changes)
        raise ProcessKilled


class ProcessKilled(BaseException):
    pass


def process(
    runtime: Runtime,
    locks: Locks,
    profile_cache: RecordCachePort[Profile],
    session_cache: RecordCachePort[Session],
    writer: RecordWriter | None = None,
) -> Process:
    storage = runtime.storage
    visitors = VisitorDirectory(
        storage.profiles,
        storage.sessions,
        profile_cache=profile_cache,
        session_cache=session_cache,
        ids=runtime.visitors.ids,
        erased=storage.erased_profiles,
    )
    ingestor = Ingestor(
        writer=writer or storage.writer,
        events=storage.events,
        visitors=visitors,
        locks=locks,
        identity=runtime.identity,
        processor=runtime.processing.process,
        consents=runtime.consent_rules,
        automation=runtime.automation,
        profiles=storage.profiles,
        held_work=runtime.held_work,
        destinations=runtime.ingestor.destinations,
    )
    operations = ProfileOperations(
        profiles=storage.profiles,
        sessions=storage.sessions,
        events=storage.events,
        writer=storage.writer,
        visitors=visitors,
        locks=locks,
        erased=storage.erased_profiles,
    )
    return Process(visitors, ingestor, operations)


@pytest.fixture
async def shared(
    runtime: Runtime, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Process, Process]]:
    first_client = await reachable_client()
    second_client = new_client()
    prefix = unique_prefix(request.node.name)
    views = []
    for client in (first_client, second_client):
        services = redis_services(client, runtime.settings, prefix=prefix)
        views.append(
            process(runtime, services.locks, services.profile_cache, services.session_cache)
        )
    try:
        yield views[0], views[1]
    finally:
        found = [key async for key in first_client.scan_iter(match=f"{prefix}:*")]
        if found:
            await first_client.delete(*found)
        await first_client.aclose()
        await second_client.aclose()


async def merge_across(first: Process, second: Process, runtime: Runtime) -> tuple[str, str, str]:
    """The first process makes a profile and has it cached; the second makes another that
    merges with it. Answers the first profile's id, the second's and the survivor's."""
    one = await first.ingestor.ingest(login(runtime, "phone"))
    assert one.profile_id is not None
    cached = await first.visitors.profile(DEFAULT_TENANT, one.profile_id)
    assert cached is not None and cached.id == one.profile_id
    two = await second.ingestor.ingest(login(runtime, "laptop"))
    assert two.profile_id is not None
    survivor = await runtime.storage.profiles.get(DEFAULT_TENANT, two.profile_id)
    assert survivor is not None
    # The second request answers the survivor; the profile it began with is the other id.
    others = set(survivor.ids) - {one.profile_id}
    assert one.profile_id in survivor.ids and len(others) == 1, "the workflow merged them"
    return one.profile_id, others.pop(), survivor.id


async def test_after_a_merge_by_another_process_no_stale_profile_is_answered(
    runtime: Runtime, shared: tuple[Process, Process]
) -> None:
    first, second = shared
    first_id, second_id, survivor_id = await merge_across(first, second, runtime)
    seen = await first.visitors.profile(DEFAULT_TENANT, first_id)
    assert seen is not None
    assert seen.id == survivor_id
    assert {first_id, second_id} <= set(seen.ids)
    # The first process's next request lands on the merged profile, not on a stale copy.
    again = await first.ingestor.ingest(login(runtime, "phone"))
    assert again.profile_id == survivor_id


async def test_a_profile_retired_by_another_process_is_not_answered_from_the_cache(
    runtime: Runtime, shared: tuple[Process, Process]
) -> None:
    first, second = shared
    one = await first.ingestor.ingest(login(runtime, "phone"))
    assert runtime.default_source is not None
    visit = IncomingBatch(
        tenant=DEFAULT_TENANT,
        source=runtime.default_source,
        session_id="laptop",
        events=[IncomingEvent(type="page-view")],
    )
    later = (await second.ingestor.ingest(visit)).profile_id
    assert one.profile_id is not None and later is not None and later != one.profile_id
    # The first process has the newer profile cached, as it would after serving it.
    cached = await first.visitors.profile(DEFAULT_TENANT, later)
    assert cached is not None and cached.id == later
    # The same person logs in on the laptop: the second process merges the two profiles.
    await second.ingestor.ingest(login(runtime, "laptop"))
    retired = await runtime.storage.profiles.retired(DEFAULT_TENANT, later)
    assert retired is not None, "the newer profile was merged into the older one"
    seen = await first.visitors.profile(DEFAULT_TENANT, later)
    assert seen is not None
    assert seen.id == retired.survivor_id
    assert {one.profile_id, later} <= set(seen.ids)


async def test_after_an_erasure_by_another_process_the_profile_is_gone(
    runtime: Runtime, shared: tuple[Process, Process]
) -> None:
    first, second = shared
    first_id, second_id, survivor_id = await merge_across(first, second, runtime)
    cached = await first.visitors.profile(DEFAULT_TENANT, survivor_id)
    assert cached is not None
    await second.operations.erase(DEFAULT_TENANT, survivor_id, with_data=True)
    for profile_id in (survivor_id, first_id, second_id):
        assert await first.visitors.profile(DEFAULT_TENANT, profile_id) is None


async def test_a_process_killed_after_its_commit_leaves_no_stale_profile_in_the_cache(
    runtime: Runtime, shared: tuple[Process, Process]
) -> None:
    """The shared cache outlives the process: one killed between its commit and putting the
    new versions back must not leave the versions before, or the next request, built on
    them, would undo its changes (here: its events would not be counted)."""
    first, second = shared
    source = runtime.default_source
    assert source is not None

    def visit(count: int) -> IncomingBatch:
        return IncomingBatch(
            tenant=DEFAULT_TENANT,
            source=source,
            session_id="tablet",
            events=[IncomingEvent(type="page-view") for _ in range(count)],
        )

    one = await first.ingestor.ingest(visit(3))
    assert one.profile_id is not None
    cached = await second.visitors.profile(DEFAULT_TENANT, one.profile_id)
    assert cached is not None and cached.stats["events"] == 3, "cached after the first request"
    # The dying process works on the same shared cache and locks as the first.
    dying = process(
        runtime,
        first.ingestor._locks,
        first.visitors.profile_cache,
        first.visitors.session_cache,
        writer=DiesAfterCommit(runtime.storage.writer),
    )
    with pytest.raises(ProcessKilled):
        await dying.ingestor.ingest(visit(4))
    stored = await runtime.storage.profiles.get(DEFAULT_TENANT, one.profile_id)
    assert stored is not None and stored.stats["events"] == 7, "the commit was kept"
    await second.ingestor.ingest(visit(5))
    final = await runtime.storage.profiles.get(DEFAULT_TENANT, one.profile_id)
    assert final is not None
    assert final.stats["events"] == 12, "the next request built on what was committed"


async def test_control_separate_in_process_caches_would_answer_a_stale_profile(
    runtime: Runtime,
) -> None:
    """Why the cache must be shared: the same steps with one cache per process."""
    locks = KeyedLocks()  # shared, so only the caches differ
    views = [
        process(
            runtime,
            locks,
            RecordCache(Profile, max_entries=100, ttl_s=600),
            RecordCache(Session, max_entries=100, ttl_s=600),
        )
        for _ in range(2)
    ]
    first_id, second_id, _survivor_id = await merge_across(views[0], views[1], runtime)
    stale = await views[0].visitors.profile(DEFAULT_TENANT, first_id)
    assert stale is not None
    # The copy cached before the merge: it knows nothing of the profile merged with it.
    assert second_id not in stale.ids
