"""A merge a workflow asks for when the other profile is busy is not lost: the request commits
what it has, then waits — holding nothing — for both profiles and merges them.

This runs the real runtime (SQLite store, ingest path, workflow stage) in-process, because the
test must hold a profile's lock itself to make the other request find it busy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tessera.identity.locking import profile_lock_key
from tessera.model.common import DEFAULT_TENANT
from tessera.runtime import Runtime
from tests.support.merge_workflow import login, merging_runtime


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with merging_runtime(tmp_path) as running:
        yield running


async def test_a_busy_profile_is_merged_once_it_is_free(runtime: Runtime) -> None:
    first = await runtime.ingestor.ingest(login(runtime, "phone"))
    assert first.profile_id is not None
    release = asyncio.Event()
    held = asyncio.Event()

    async def busy_first_profile() -> None:
        async with runtime.locks.hold(profile_lock_key(DEFAULT_TENANT, first.profile_id or "")):
            held.set()
            await release.wait()

    holder = asyncio.create_task(busy_first_profile())
    await held.wait()
    second_task = asyncio.create_task(runtime.ingestor.ingest(login(runtime, "laptop")))
    # The second request commits its own profile first, then waits for the busy one.
    deadline = time.monotonic() + 10
    second_session = None
    while second_session is None and time.monotonic() < deadline:
        second_session = await runtime.storage.sessions.get(DEFAULT_TENANT, "laptop")
        await asyncio.sleep(0.01)
    assert second_session is not None and second_session.profile is not None
    second_id = second_session.profile.id
    assert second_id != first.profile_id
    assert not second_task.done(), "the merge waits for the busy profile"
    release.set()
    second = await asyncio.wait_for(second_task, 10)
    await holder
    survivor = await runtime.storage.profiles.get(DEFAULT_TENANT, second_id)
    assert survivor is not None
    assert {first.profile_id, second_id} <= set(survivor.ids)
    assert second.profile_id == second_id  # the answer names the profile the request used
