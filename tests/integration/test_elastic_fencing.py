"""Fencing on Elasticsearch: a write by an earlier holder of a record's lock never overwrites
what a later holder wrote.

Elasticsearch has no transactions and a bulk request cannot be called back: one that timed out
may be applied after its caller answered 503 and let its locks go, and after the next holder
of the same profile or session wrote a newer version. The writer therefore writes profiles and
sessions (and deletes merged-away and erased profiles) with the fencing token of their lock as
an external version (storage/elastic/writer.py). A late write is then refused, and its caller,
if still waiting, gets StorageUnavailable (a retry reads again under a fresh lock), never
RecordRejected.

"Late" is made deterministic here: the older holder's change set is simply committed after the
newer one's, as a bulk that Elasticsearch held back would land. The tokens come from real
locks, taken one after the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch

from tessera.core.cache import CacheKeys, RecordCache
from tessera.core.locks import KeyedLocks, Locks
from tessera.errors import RecordRejected, StorageUnavailable
from tessera.identity.locking import profile_lock_key, session_lock_key
from tessera.identity.visitor import VisitorDirectory
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.storage.elastic import codec
from tessera.storage.elastic.backend import ElasticRecordBackend
from tessera.storage.elastic.bulk import Operation, Retrier, send
from tessera.storage.ports import ChangeSet, Erasure, RetiredProfile
from tessera.storage.redis.locks import RedisLocks, RedisLockSet
from tessera.storage.sql.stores import SqlErasedProfiles
from tests.contract.test_record_stores import TENANT, make_profile, make_session
from tests.support.elastic import URL, drop_created_prefixes, elastic_backend
from tests.support.redis_service import redis_space
from tests.support.tcp_proxy import TcpRelay
from tests.support.visitors import TEST_IDS, erased_profiles


@pytest.fixture(autouse=True)
def _drop_prefixes() -> Iterator[None]:
    yield
    drop_created_prefixes()


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[ElasticRecordBackend]:
    async with elastic_backend(tmp_path) as started:
        yield started


async def fences(locks: Locks, key: str, count: int) -> list[int]:
    """The tokens of ``count`` holders of ``key``, one after the other (oldest first)."""
    taken: list[int] = []
    for _ in range(count):
        async with locks.hold_all([key]) as held:
            fence = held.fence(key)
            assert fence is not None
            taken.append(fence)
    return taken


def profile_version(profile_id: str, fence: int) -> dict[tuple[str, str, str], int]:
    return {("profile", TENANT, profile_id): fence}


async def copies(backend: ElasticRecordBackend, kind: str, record_id: str) -> list[str]:
    answer = await backend.client.search(
        index=backend.names.alias(TENANT, kind), query={"ids": {"values": [record_id]}}, size=10
    )
    return sorted(hit["_index"] for hit in answer["hits"]["hits"])


async def test_a_late_write_of_an_earlier_lock_holder_is_refused(
    backend: ElasticRecordBackend,
) -> None:
    locks = KeyedLocks()
    older, newer = await fences(locks, profile_lock_key(TENANT, "p-1"), 2)
    older_session, newer_session = await fences(locks, session_lock_key(TENANT, "s-1"), 2)
    stale = ChangeSet(
        profiles=[make_profile("p-1", traits={"holder": "older"})],
        sessions=[make_session("s-1", events=1)],
        versions={
            **profile_version("p-1", older),
            ("session", TENANT, "s-1"): older_session,
        },
    )
    fresh = ChangeSet(
        profiles=[make_profile("p-1", traits={"holder": "newer"})],
        sessions=[make_session("s-1", events=2)],
        versions={
            **profile_version("p-1", newer),
            ("session", TENANT, "s-1"): newer_session,
        },
    )
    await backend.writer.commit(fresh)

    # The older holder's bulk lands now: its caller lost its lock, so it learns of an outage
    # (its retry reads the newer version under a fresh lock), not of a record that is wrong.
    with pytest.raises(StorageUnavailable) as refused:
        await backend.writer.commit(stale)
    assert not isinstance(refused.value, RecordRejected)
    assert "later holder" in refused.value.message

    profile = await backend.profiles.get(TENANT, "p-1")
    session = await backend.sessions.get(TENANT, "s-1")
    assert profile is not None and profile.traits == {"holder": "newer"}
    assert session is not None and session.events == 2

    # Only the stale records fail: a session of the older holder alone is refused as well,
    # and the later holder writes its record again (equal versions pass).
    with pytest.raises(StorageUnavailable):
        await backend.writer.commit(
            ChangeSet(
                sessions=[make_session("s-1", events=1)],
                versions={("session", TENANT, "s-1"): older_session},
            )
        )
    fresh.profiles = [make_profile("p-1", traits={"holder": "newer", "again": True})]
    await backend.writer.commit(fresh)
    profile = await backend.profiles.get(TENANT, "p-1")
    assert profile is not None and profile.traits == {"holder": "newer", "again": True}


async def test_a_stale_caller_in_a_batch_fails_alone(backend: ElasticRecordBackend) -> None:
    locks = KeyedLocks()
    older, newer = await fences(locks, profile_lock_key(TENANT, "p-1"), 2)
    (other,) = await fences(locks, profile_lock_key(TENANT, "p-2"), 1)
    await backend.writer.commit(
        ChangeSet(profiles=[make_profile("p-1")], versions=profile_version("p-1", newer))
    )
    # Committed together: they share one bulk request (flush interval), as callers do.
    stale, unrelated = await asyncio.gather(
        backend.writer.commit(
            ChangeSet(
                profiles=[make_profile("p-1", traits={"stale": True})],
                versions=profile_version("p-1", older),
            )
        ),
        backend.writer.commit(
            ChangeSet(profiles=[make_profile("p-2")], versions=profile_version("p-2", other))
        ),
        return_exceptions=True,
    )
    assert isinstance(stale, StorageUnavailable) and not isinstance(stale, RecordRejected)
    assert unrelated is None
    stored = await backend.profiles.get(TENANT, "p-1")
    assert stored is not None and stored.traits == {}
    assert await backend.profiles.get(TENANT, "p-2") is not None


async def test_records_written_before_versions_take_a_versioned_write(
    backend: ElasticRecordBackend,
) -> None:
    # Written unversioned (as before fencing, or by a caller holding no lock): Elasticsearch
    # counts internal versions 1, 2, 3; a token (microseconds since the epoch) is far above.
    for n in range(3):
        await backend.writer.commit(
            ChangeSet(
                profiles=[make_profile("p-1", traits={"n": n})],
                sessions=[make_session("s-1", events=n)],
            )
        )
    locks = KeyedLocks()
    (fence,) = await fences(locks, profile_lock_key(TENANT, "p-1"), 1)
    (session_fence,) = await fences(locks, session_lock_key(TENANT, "s-1"), 1)
    await backend.writer.commit(
        ChangeSet(
            profiles=[make_profile("p-1", traits={"n": "versioned"})],
            sessions=[make_session("s-1", events=9)],
            versions={**profile_version("p-1", fence), ("session", TENANT, "s-1"): session_fence},
        )
    )
    profile = await backend.profiles.get(TENANT, "p-1")
    session = await backend.sessions.get(TENANT, "s-1")
    assert profile is not None and profile.traits == {"n": "versioned"}
    assert session is not None and session.events == 9
    found = await backend.client.get(
        index=(await copies(backend, "profile", "p-1"))[0], id="p-1", source=False
    )
    assert found["_version"] == fence


async def test_a_merged_away_profile_is_not_brought_back_by_a_late_write(
    backend: ElasticRecordBackend,
) -> None:
    locks = KeyedLocks()
    older, merger = await fences(locks, profile_lock_key(TENANT, "p-loser"), 2)
    (survivor_fence,) = await fences(locks, profile_lock_key(TENANT, "p-survivor"), 1)
    loser = make_profile("p-loser", traits={"v": 1})
    await backend.writer.commit(
        ChangeSet(profiles=[loser], versions=profile_version("p-loser", older))
    )
    survivor = make_profile("p-survivor", ids=["p-survivor", "p-loser"])
    await backend.writer.commit(
        ChangeSet(
            profiles=[survivor],
            retired=[RetiredProfile(loser, "p-survivor")],
            versions={
                **profile_version("p-loser", merger),
                **profile_version("p-survivor", survivor_fence),
            },
        )
    )
    assert await copies(backend, "profile", "p-loser") == []

    # The loser's earlier holder's write lands after the merge: refused, the loser stays gone.
    with pytest.raises(StorageUnavailable):
        await backend.writer.commit(
            ChangeSet(
                profiles=[make_profile("p-loser", traits={"v": 2})],
                versions=profile_version("p-loser", older),
            )
        )
    assert await copies(backend, "profile", "p-loser") == []
    resolved = await backend.profiles.get(TENANT, "p-loser")
    assert resolved is not None and resolved.id == "p-survivor"


async def test_an_erased_profile_is_not_brought_back_by_a_late_write(
    backend: ElasticRecordBackend,
) -> None:
    locks = KeyedLocks()
    older, eraser = await fences(locks, profile_lock_key(TENANT, "p-1"), 2)
    await backend.writer.commit(
        ChangeSet(profiles=[make_profile("p-1")], versions=profile_version("p-1", older))
    )
    await backend.writer.commit(
        ChangeSet(erasures=[Erasure(TENANT, ("p-1",))], versions=profile_version("p-1", eraser))
    )
    with pytest.raises(StorageUnavailable):
        await backend.writer.commit(
            ChangeSet(
                profiles=[make_profile("p-1", traits={"late": True})],
                versions=profile_version("p-1", older),
            )
        )
    assert await backend.profiles.get(TENANT, "p-1") is None


async def version_conflicts(backend: ElasticRecordBackend, index: str) -> int:
    answer = await backend.client.indices.stats(index=index, metric="indexing")
    return int(answer["_all"]["primaries"]["indexing"]["index_failed_due_to_version_conflict"])


async def test_a_bulk_that_timed_out_and_lands_after_a_newer_write_is_refused(
    backend: ElasticRecordBackend,
) -> None:
    """The case itself, through a silent connection: the older holder's bulk request times out
    (its caller would answer 503 and let its locks go), the next holder writes, and only then
    does the held request reach Elasticsearch, which applies it."""
    locks = KeyedLocks()
    older, newer = await fences(locks, profile_lock_key(TENANT, "p-1"), 2)
    await backend.writer.commit(
        ChangeSet(profiles=[make_profile("p-1")], versions=profile_version("p-1", older))
    )
    (home,) = await copies(backend, "profile", "p-1")
    conflicts_before = await version_conflicts(backend, home)

    relay = TcpRelay("127.0.0.1", int(URL.rsplit(":", 1)[1]))
    await relay.hang()
    late = AsyncElasticsearch(relay.url, request_timeout=0.5)
    try:
        stale = Operation(
            0,
            "index",
            home,
            "p-1",
            codec.searchable(make_profile("p-1", traits={"holder": "older"})),
            version=older,
        )
        failures = await send(late, [stale], refresh="true", retrier=Retrier(0))
        assert failures  # timed out: the caller was told the commit failed

        await backend.writer.commit(
            ChangeSet(
                profiles=[make_profile("p-1", traits={"holder": "newer"})],
                versions=profile_version("p-1", newer),
            )
        )
        await relay.up()  # the held request reaches Elasticsearch now

        async def landed() -> Profile | None:
            """The stored profile once the late request was applied or refused."""
            stored = await backend.profiles.get(TENANT, "p-1")
            refused = await version_conflicts(backend, home) > conflicts_before
            return stored if refused or (stored and stored.traits["holder"] == "older") else None

        async with asyncio.timeout(10):
            while (stored := await landed()) is None:
                await asyncio.sleep(0.05)
    finally:
        await late.close()
        await relay.down()
    assert stored is not None and stored.traits == {"holder": "newer"}


async def test_a_holder_that_lost_its_lock_cannot_overwrite_through_the_directory(
    backend: ElasticRecordBackend, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The versions come from the locks the caller holds: a holder that stalled past its
    lock's time to live (its lock taken and used by another process meanwhile) after its
    check passed commits all the same, as a bulk already sent would, and is refused."""
    async with erased_profiles(tmp_path / "erased") as erased:
        await _lost_lock_cannot_overwrite(backend, request, erased)


class CheckedBeforeTheStall(RedisLockSet):
    """Locks whose holder's check passed right before its process stalled: its commit (which
    checks them first, VisitorDirectory.commit) goes on, as a bulk already sent would."""

    async def still_held(self, discard: Iterable[CacheKeys] = ()) -> bool:
        return True


async def _lost_lock_cannot_overwrite(
    backend: ElasticRecordBackend, request: pytest.FixtureRequest, erased: SqlErasedProfiles
) -> None:
    visitors = VisitorDirectory(
        backend.profiles,
        backend.sessions,
        profile_cache=RecordCache(Profile, max_entries=100, ttl_s=60),
        session_cache=RecordCache(Session, max_entries=100, ttl_s=60),
        ids=TEST_IDS,
        erased=erased,
    )
    keys = [profile_lock_key(TENANT, "p-1"), session_lock_key(TENANT, "s-1")]

    def visit(holder: str, events: int) -> ChangeSet:
        """What a request of this holder commits: the profile and the session it counted."""
        return ChangeSet(
            profiles=[make_profile("p-1", traits={"holder": holder})],
            sessions=[make_session("s-1", events=events)],
        )

    async with redis_space(request.node.name) as (client, space):
        stalling = RedisLocks(client, space, ttl_s=0.2)
        taker = RedisLocks(client, space, ttl_s=10.0)
        async with CheckedBeforeTheStall(stalling, keys) as stalled:
            time.sleep(0.5)  # the whole process stalls: no renewal runs, the locks expire
            async with taker.hold_all(keys) as held:
                await visitors.commit(backend.writer, visit("taker", 2), held=held)
            with pytest.raises(StorageUnavailable):
                await visitors.commit(backend.writer, visit("stalled", 1), held=stalled)
    profile = await backend.profiles.get(TENANT, "p-1")
    session = await backend.sessions.get(TENANT, "s-1")
    assert profile is not None and profile.traits == {"holder": "taker"}
    assert session is not None and session.events == 2
