"""Resharding while ingestion goes on (tessera/storage/elastic/reshard.py), on the real cluster.

A background task commits a steady stream of change sets through the real writer (new events,
profile updates carrying a counter, session updates) while each kind is resharded; a reader
checks meanwhile that no committed record is ever missing or older than committed. Afterwards
every partition is in the new generation with the new shard count, every committed event is
stored exactly once, every profile and session once with its last committed counter, and the
alias searches find them all.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch
from typer.testing import CliRunner

from tessera.cli import app
from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.query import parse
from tessera.storage.elastic.backend import ElasticRecordBackend
from tessera.storage.elastic.generations import read_generations
from tessera.storage.elastic.inventory import known_indices
from tessera.storage.elastic.reshard import reshard
from tessera.storage.elastic.schema import IndexShape
from tessera.storage.ports import ChangeSet
from tessera.storage.search import SearchRequest
from tests.contract.test_record_stores import T0, make_event, make_profile, make_session
from tests.support.elastic import (
    URL,
    claim_prefix,
    drop_created_prefixes,
    make_backend,
    require_elastic,
)

TENANTS = ("acme", "Beta Co")  # the second is spelled t+<hex> in index names
SEED_PROFILES = 24
SEED_EVENTS = 240
NEW_SHARDS = {"event": 2, "session": 3, "profile": 2}


@pytest.fixture(autouse=True)
def _drop_prefixes() -> Iterator[None]:
    yield
    drop_created_prefixes()


@dataclass
class Committed:
    """What the writer acknowledged: the truth the stores must show."""

    events: dict[tuple[str, str], Event] = field(default_factory=dict)
    profiles: dict[tuple[str, str], int] = field(default_factory=dict)
    sessions: dict[tuple[str, str], int] = field(default_factory=dict)
    change_sets: int = 0


def _profile(tenant: str, number: int, counter: int) -> Profile:
    # Insert times two years apart: profiles live in two yearly partitions.
    profile = make_profile(f"p-{number}", tenant=tenant, traits={"counter": counter})
    profile.metadata.time.insert = T0 - timedelta(days=400 * (number % 2))
    profile.metadata.time.update = T0 + timedelta(seconds=counter)
    return profile


def _session(tenant: str, number: int, counter: int) -> Session:
    session = make_session(f"s-{number}", tenant=tenant, profile=f"p-{number}", events=counter)
    session.metadata.time.insert = T0 - timedelta(days=100 * (number % 3))  # three quarters
    return session


def _event(tenant: str, number: int) -> Event:
    # Event times over four months: four monthly partitions per tenant.
    when = T0 - timedelta(days=31 * (number % 4), minutes=number)
    return make_event(
        f"e-{number}", tenant=tenant, profile=f"p-{number % SEED_PROFILES}", time=when
    )


async def _commit(backend: ElasticRecordBackend, truth: Committed, changes: ChangeSet) -> None:
    await backend.writer.commit(changes)
    # Only now is it committed: the truth follows the writer's acknowledgement.
    for event in changes.events:
        truth.events.setdefault((event.tenant, event.id), event)
    for profile in changes.profiles:
        truth.profiles[(profile.tenant, profile.id)] = profile.traits["counter"]
    for session in changes.sessions:
        truth.sessions[(session.tenant, session.id)] = session.events
    truth.change_sets += 1


async def _seed(backend: ElasticRecordBackend, truth: Committed) -> None:
    for tenant in TENANTS:
        await _commit(
            backend,
            truth,
            ChangeSet(
                events=[_event(tenant, n) for n in range(SEED_EVENTS)],
                profiles=[_profile(tenant, n, 0) for n in range(SEED_PROFILES)],
                sessions=[_session(tenant, n, 0) for n in range(SEED_PROFILES)],
            ),
        )


async def _ingest(backend: ElasticRecordBackend, truth: Committed, stop: asyncio.Event) -> None:
    """Change sets without pause: new events (some repeated), counters up, a new profile now
    and then — a repeated event id must still land once."""
    rng = random.Random(5)
    counter = 0
    next_event = SEED_EVENTS
    next_profile = SEED_PROFILES
    while not stop.is_set():
        counter += 1
        tenant = TENANTS[counter % len(TENANTS)]
        people = rng.sample(range(next_profile), 3)
        events = [_event(tenant, next_event + i) for i in range(4)]
        events.append(_event(tenant, rng.randrange(next_event)))  # a retry of an old event
        next_event += 4
        profiles = [_profile(tenant, n, counter) for n in people]
        sessions = [_session(tenant, n, counter) for n in people[:2]]
        if counter % 7 == 0:
            profiles.append(_profile(tenant, next_profile, counter))
            sessions.append(_session(tenant, next_profile, counter))
            next_profile += 1
        await _commit(
            backend, truth, ChangeSet(events=events, profiles=profiles, sessions=sessions)
        )


async def _read_during(backend: ElasticRecordBackend, truth: Committed, stop: asyncio.Event) -> int:
    """Reads while the move runs: a committed record is always found, never older."""
    rng = random.Random(9)
    reads = 0
    while not stop.is_set():
        key = rng.choice(sorted(truth.profiles))
        floor = truth.profiles[key]
        profile = await backend.profiles.get(*key)
        assert profile is not None, f"profile {key} missing during the reshard"
        assert profile.traits["counter"] >= floor, (key, profile.traits, floor)
        session_key = rng.choice(sorted(truth.sessions))
        floor = truth.sessions[session_key]
        session = await backend.sessions.get(*session_key)
        assert session is not None and session.events >= floor, session_key
        event_key = rng.choice(sorted(truth.events))
        assert await backend.events.get(*event_key) is not None, event_key
        reads += 3
        await asyncio.sleep(0.005)
    return reads


async def _stored(client: AsyncElasticsearch, alias: str) -> dict[str, list[dict[str, Any]]]:
    """Every document behind the alias, by id (each copy), read with search_after."""
    found: dict[str, list[dict[str, Any]]] = {}
    after: list[Any] | None = None
    while True:
        answer = await client.search(
            index=alias, sort=[{"id": "asc"}, {"_index": "asc"}], size=1000, search_after=after
        )
        hits = answer["hits"]["hits"]
        if not hits:
            return found
        for hit in hits:
            found.setdefault(hit["_id"], []).append(hit)
        after = hits[-1]["sort"]


async def test_reshard_every_kind_while_ingesting(tmp_path: Path) -> None:
    require_elastic()
    backend = make_backend(tmp_path, generation_ttl_s=0.3, retry_budget_s=20.0)
    await backend.start()
    truth = Committed()
    try:
        await _seed(backend, truth)
        seeded = len(truth.events)
        stop = asyncio.Event()
        ingest = asyncio.create_task(_ingest(backend, truth, stop))
        reader = asyncio.create_task(_read_during(backend, truth, stop))
        reports = []
        try:
            for kind, shards in NEW_SHARDS.items():
                reports.append(
                    await reshard(
                        backend.client,
                        backend.names,
                        backend.schema,
                        kind,
                        IndexShape(shards, 0),
                        settle_s=0.5,
                        grace_s=0.5,
                        page_size=40,
                    )
                )
        finally:
            stop.set()
            await ingest
            reads = await reader
        committed_during = truth.change_sets - len(TENANTS)
        # The stream really ran through the moves (not only before or after them).
        assert committed_during > 20, committed_during

        client = backend.client
        indices = await known_indices(client, backend.names)
        generations = await read_generations(client, backend.names)
        for kind, shards in NEW_SHARDS.items():
            assert generations[kind].generation == 2 and generations[kind].moving_from is None
            mine = [index for index in indices if index.kind == kind]
            assert mine and all(index.version == 2 for index in mine), [i.name for i in mine]
            settings = await client.indices.get_settings(index=",".join(i.name for i in mine))
            assert {
                int(item["settings"]["index"]["number_of_shards"]) for item in settings.values()
            } == {shards}
        # Every partition the seed made was moved (4 months, 3 quarters, 2 years per tenant).
        moved = {report.kind: len(report.moved) for report in reports}
        assert moved["event"] >= 8 and moved["session"] >= 6 and moved["profile"] >= 4, moved

        lines = []
        for tenant in TENANTS:
            events = await _stored(client, backend.names.alias(tenant, "event"))
            wanted = {eid for (t, eid) in truth.events if t == tenant}
            assert set(events) == wanted
            assert all(len(copies) == 1 for copies in events.values()), "an event twice"
            profiles = await _stored(client, backend.names.alias(tenant, "profile"))
            wanted_profiles = {pid: c for (t, pid), c in truth.profiles.items() if t == tenant}
            assert set(profiles) == set(wanted_profiles)
            for pid, copies in profiles.items():
                assert len(copies) == 1, f"profile {pid} stored {len(copies)} times"
                assert copies[0]["_source"]["traits"]["counter"] == wanted_profiles[pid], pid
            sessions = await _stored(client, backend.names.alias(tenant, "session"))
            wanted_sessions = {sid: c for (t, sid), c in truth.sessions.items() if t == tenant}
            assert set(sessions) == set(wanted_sessions)
            for sid, copies in sessions.items():
                assert len(copies) == 1 and copies[0]["_source"]["events"] == wanted_sessions[sid]
            # Through the stores, as the API reads: the search (fields rebuilt) finds all.
            everyone = SearchRequest(condition=None, limit=1)
            assert (await backend.events.search(tenant, everyone)).total == len(wanted)
            assert (await backend.profiles.search(tenant, everyone)).total == len(wanted_profiles)
            counted = await backend.profiles.search(
                tenant, SearchRequest(condition=parse("profile@traits.counter >= 0"), limit=1)
            )
            assert counted.total == len(wanted_profiles)
            lines.append(
                f"{tenant}: events {len(events)}/{len(wanted)}, profiles "
                f"{len(profiles)}/{len(wanted_profiles)}, sessions "
                f"{len(sessions)}/{len(wanted_sessions)} (stored/committed)"
            )
        print(
            f"\nreshard while ingesting: {committed_during} change sets committed during the "
            f"moves, {len(truth.events) - seeded} new events, {reads} reads meanwhile, "
            f"{backend.writer.replans} batches planned again; "
            + "; ".join(f"{r.kind} {len(r.moved)} partitions → {r.shards} shards" for r in reports)
        )
        for line in lines:
            print("  " + line)

        # The writer goes on in the new generation after the move, and a record written now
        # is found once.
        later = _profile(TENANTS[0], 0, 10_000)
        await _commit(backend, truth, ChangeSet(profiles=[later]))
        copies = (await _stored(client, backend.names.alias(TENANTS[0], "profile")))["p-0"]
        assert [hit["_source"]["traits"]["counter"] for hit in copies] == [10_000]
        assert ".v2-" in copies[0]["_index"]
    finally:
        await backend.close()


async def test_a_second_reshard_continues_the_generations(tmp_path: Path) -> None:
    """Generation 2 → 3; a new partition made by the writer afterwards gets the new shape."""
    require_elastic()
    backend = make_backend(tmp_path, generation_ttl_s=0.2)
    await backend.start()
    try:
        tenant = TENANTS[0]
        await backend.writer.commit(ChangeSet(events=[_event(tenant, n) for n in range(30)]))
        args = (backend.client, backend.names, backend.schema, "event")
        first = await reshard(*args, IndexShape(2, 0), settle_s=0.3, grace_s=0.1)
        second = await reshard(*args, IndexShape(3, 0), settle_s=0.3, grace_s=0.1)
        assert (first.to_generation, second.to_generation) == (2, 3)
        assert sum(m.documents for m in second.moved) == 30
        # A month no event had before: created by the writer, in generation 3, with 3 shards.
        fresh = make_event("e-new", tenant=tenant, time=T0 - timedelta(days=400))
        await backend.writer.commit(ChangeSet(events=[fresh]))
        index = backend.names.partition_index(tenant, "event", "2023-03", 3)
        settings = await backend.client.indices.get_settings(index=index)
        assert settings[index]["settings"]["index"]["number_of_shards"] == "3"
        assert (await backend.events.get(tenant, "e-new")) is not None
        assert await backend.events.existing_ids(tenant, ["e-1", "e-29", "e-new"]) == {
            "e-1",
            "e-29",
            "e-new",
        }
        # A restarted server (fresh templates from the schema) keeps writing generation 3.
        await backend.create_schema()
        again = await read_generations(backend.client, backend.names)
        assert again["event"].generation == 3 and again["event"].shards == 3
    finally:
        await backend.close()


def test_reshard_command(tmp_path: Path) -> None:
    """`tessera storage reshard` end to end (the CLI runs its own event loop: a sync test)."""
    require_elastic()
    prefix = claim_prefix(tmp_path)

    async def seed() -> None:
        backend = make_backend(tmp_path)
        await backend.start()
        try:
            await backend.writer.commit(
                ChangeSet(profiles=[_profile("acme", n, n) for n in range(12)])
            )
        finally:
            await backend.close()

    asyncio.run(seed())
    env = {"ELASTIC_HOST": URL, "TESSERA_ELASTIC_INDEX_PREFIX": prefix, "COLUMNS": "250"}
    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            *("storage", "reshard", "--kind", "profile", "--shards", "2"),
            *("--replicas", "0", "--settle-seconds", "0.2"),
        ],
        env=env,
    )
    assert done.exit_code == 0, done.output
    assert "profile resharded" in done.output and "now generation 2 with 2 shards" in done.output
    assert f"{prefix}.acme.profile.v2-2024" in done.stdout  # the table of moved partitions
    client = Elasticsearch(URL, request_timeout=30)
    try:
        alias = f"{prefix}.acme.profile"
        assert client.count(index=alias)["count"] == 12
        behind = client.indices.get_alias(name=alias).body
        assert all(".v2-" in index for index in behind), behind
        shards = {
            item["settings"]["index"]["number_of_shards"]
            for item in client.indices.get_settings(index=",".join(behind)).body.values()
        }
        assert shards == {"2"}
    finally:
        client.close()

    wrong = runner.invoke(
        app, ["storage", "reshard", "--kind", "identity", "--shards", "2"], env=env
    )
    assert wrong.exit_code == 2 and "event, session, profile" in wrong.output
