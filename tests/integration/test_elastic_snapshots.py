"""Backups on a real Elasticsearch: snapshot, lose every index, restore, read through the aliases.

Two real clusters (scripts/services): the one every test uses (port 9200) and a second, empty
one (`elasticsearch-restore`, port 9201) with the same path.repo. One test writes through the
real record writer on the first, snapshots it and restores it into the second, which sees the
repository read-only (two clusters must never both write one repository); the others play the
loss on one cluster, by deleting every index and template of the test's prefix before restoring.
Each test registers an fs repository of its own under path.repo and removes it (and its files)
afterwards.
No S3 service is available: the s3 settings are validated locally (tests/unit), and registering
one here shows how a cluster without the repository-s3 module refuses it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch, NotFoundError
from typer.testing import CliRunner

from tessera.cli import app
from tessera.errors import ConfigurationError, Conflict, NotFound, StorageUnavailable
from tessera.model.common import DEFAULT_TENANT
from tessera.query import parse
from tessera.storage.elastic import codec
from tessera.storage.elastic.homes import ById, Partitions
from tessera.storage.elastic.inventory import list_index_names
from tessera.storage.elastic.naming import Names
from tessera.storage.elastic.schema import SCHEMA_VERSION, ElasticSchema
from tessera.storage.elastic.snapshots import (
    Repository,
    fs_repository,
    list_snapshots,
    register_repository,
    registered_repository,
    restore_snapshot,
    s3_repository,
    start_snapshot,
    wait_for_snapshot,
)
from tessera.storage.elastic.stores import (
    ElasticEventStore,
    ElasticProfileStore,
    ElasticSessionStore,
)
from tessera.storage.ports import ChangeSet, IdentityLink
from tessera.storage.search import SearchRequest
from tests.contract.test_record_stores import T0, make_event, make_profile, make_session
from tests.support.elastic import drop_created_prefixes, drop_prefix, make_backend
from tests.support.elastic_cluster import SMALL, URL, installation, reachable_client, unique_prefix
from tests.support.services import service_missing

TENANTS = ("acme", "Ünï")
# The second, empty cluster of `scripts/services up elasticsearch-restore`.
RESTORE_URL = os.environ.get("ELASTIC_RESTORE_TEST_URL", "http://127.0.0.1:9201")
# kind -> partitions with one document each, per tenant.
PARTITIONS = {"event": ("2024-03", "2024-04"), "session": ("2024-q1",), "profile": ("2024",)}


def path_repo(client: Elasticsearch) -> Path:
    answer = client.nodes.info(metric="settings", filter_path="nodes.*.settings.path.repo")
    for node in (answer.body.get("nodes") or {}).values():
        roots = node["settings"]["path"]["repo"]
        return Path(roots[0] if isinstance(roots, list) else roots)
    service_missing(f"Elasticsearch at {URL} has no path.repo; fs snapshots cannot be tested")


class FsRepository:
    """A repository of its own for one test: registered, then emptied and removed."""

    def __init__(self) -> None:
        self.name = f"tt-snap-{uuid.uuid4().hex[:10]}"
        self.client = Elasticsearch(URL, request_timeout=30)
        self.location = path_repo(self.client) / self.name

    def close(self) -> None:
        try:
            for item in list_names(self.client, self.name):
                self.client.snapshot.delete(repository=self.name, snapshot=item)
            self.client.snapshot.delete_repository(name=self.name)
        except NotFoundError:
            pass
        finally:
            self.client.close()
        # Written by the Elasticsearch user; the tests' user may remove it only if it may.
        shutil.rmtree(self.location, ignore_errors=True)


def list_names(client: Elasticsearch, repository: str) -> list[str]:
    answer = client.snapshot.get(repository=repository, snapshot="*")
    return [item["snapshot"] for item in answer["snapshots"]]


@pytest.fixture
async def client() -> AsyncIterator[AsyncElasticsearch]:
    client = await reachable_client()
    yield client
    await client.close()


@pytest.fixture
async def second_cluster() -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(RESTORE_URL, request_timeout=30)
    try:
        await client.cluster.health(wait_for_status="yellow", timeout="10s")
    except Exception as error:  # noqa: BLE001 - any failure to reach it is a reason to skip
        await client.close()
        reason = f"{type(error).__name__}: {error}"[:200]
        service_missing(
            f"second Elasticsearch cluster at {RESTORE_URL} cannot be reached "
            f"({reason}); run `bash scripts/services up elasticsearch-restore`"
        )
    yield client
    await client.close()


@pytest.fixture
def repository(client: AsyncElasticsearch) -> Iterator[FsRepository]:
    made = FsRepository()
    yield made
    made.close()


@pytest.fixture
async def installed(client: AsyncElasticsearch) -> AsyncIterator[tuple[Names, ElasticSchema]]:
    async with installation(client, unique_prefix("snap")) as (names, schema):
        await schema.ensure_tenants(set(TENANTS))
        yield names, schema


async def fill(client: AsyncElasticsearch, names: Names) -> dict[str, set[str]]:
    """One document per partition and tenant; alias -> the ids it must answer."""
    expected: dict[str, set[str]] = {}
    for tenant in TENANTS:
        for kind, partitions in PARTITIONS.items():
            alias = names.alias(tenant, kind)
            for suffix in partitions:
                doc_id = f"{kind}-{suffix}"
                index = names.partition_index(tenant, kind, suffix)
                await client.index(index=index, id=doc_id, document={"id": doc_id})
                expected.setdefault(alias, set()).add(doc_id)
    identity = names.single_index("acme", "identity")
    await client.index(index=identity, id="identity-1", document={"id": "identity-1"})
    await client.indices.refresh(index=names.everything())
    return expected


async def searchable(client: AsyncElasticsearch, alias: str) -> set[str]:
    hits = await client.search(index=alias, query={"match_all": {}}, size=100)
    return {hit["_id"] for hit in hits["hits"]["hits"]}


async def snapshot(
    client: AsyncElasticsearch, repository: FsRepository, names: Names, name: str
) -> list[tuple[int, int]]:
    progress: list[tuple[int, int]] = []
    started = await start_snapshot(client, repository.name, names, name)
    info = await wait_for_snapshot(
        client,
        repository.name,
        started,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert info.state == "SUCCESS", info.failures
    return progress


async def test_snapshot_then_restore_into_an_empty_prefix(
    client: AsyncElasticsearch,
    repository: FsRepository,
    installed: tuple[Names, ElasticSchema],
) -> None:
    names, schema = installed
    expected = await fill(client, names)
    before = await list_index_names(client, names)
    spec = fs_repository(repository.name, str(repository.location))
    assert await register_repository(client, spec) == []  # fs: no node settings to warn about
    shown = await registered_repository(client, repository.name)
    assert shown is not None and shown["type"] == "fs"
    assert shown["settings"]["location"] == str(repository.location)

    progress = await snapshot(client, repository, names, "first")
    assert progress[-1] == (len(before), len(before))  # one shard per index, all done
    [info] = await list_snapshots(client, repository.name)
    assert (info.name, info.state, info.prefix) == ("first", "SUCCESS", names.prefix)
    assert info.schema_version == SCHEMA_VERSION
    assert info.indices == before

    # The loss: every index and every template of the prefix is gone.
    await schema.drop_everything()
    assert await list_index_names(client, names) == []
    with pytest.raises(NotFoundError):
        await client.indices.get_index_template(name=names.index_template("acme", "event"))

    fresh = ElasticSchema(client, names, SMALL)
    report = await restore_snapshot(client, repository.name, "first", names, fresh)
    assert report.indices == before and report.replaced == [] and report.warnings == []
    assert report.tenants == sorted(TENANTS)
    assert await list_index_names(client, names) == before

    # The documents are back, and searchable through the aliases.
    for alias, ids in expected.items():
        assert await searchable(client, alias) == ids, alias
    hits = await client.search(
        index=names.alias("Ünï", "event"), query={"term": {"id": "event-2024-04"}}
    )
    assert [hit["_id"] for hit in hits["hits"]["hits"]] == ["event-2024-04"]
    assert await searchable(client, names.single_index("acme", "identity")) == {"identity-1"}

    # The templates came back too: a partition made after the restore gets its mapping and alias.
    templates = await client.indices.get_index_template(name=names.index_template("acme", "event"))
    assert templates["index_templates"][0]["index_template"]["composed_of"] == [
        names.component_template("event")
    ]
    new = names.partition_index("acme", "event", "2024-05")
    await client.index(
        index=new, id="event-2024-05", document={"id": "event-2024-05"}, refresh=True
    )
    assert "event-2024-05" in await searchable(client, names.alias("acme", "event"))
    mapping = await client.indices.get_mapping(index=new)
    assert mapping[new]["mappings"]["dynamic"] in (False, "false")


def written_records() -> ChangeSet:
    """What a running Tessera would have stored: two tenants, three event months, sessions,
    profiles (one with a merged id) and an identity link."""
    april, may = T0 - timedelta(days=20), T0
    return ChangeSet(
        events=[
            make_event("e-1", profile="p-1", session="s-1", time=april),
            make_event(
                "e-2",
                profile="p-1",
                session="s-1",
                event_type="purchase",
                time=may,
                properties={"total": 80},
            ),
            make_event(
                "e-3",
                profile="p-2",
                session="s-2",
                event_type="purchase",
                time=may + timedelta(hours=1),
                properties={"total": 10},
            ),
            make_event("u-1", tenant="Ünï", profile="u-p", session=None, time=april),
        ],
        sessions=[make_session("s-1", profile="p-1"), make_session("s-2", profile="p-2")],
        profiles=[
            make_profile("p-1", ids=["p-1", "anon-1"], traits={"plan": "pro"}),
            make_profile("p-2", traits={"plan": "free"}),
            make_profile("u-p", tenant="Ünï"),
        ],
        identities=[IdentityLink("acme", "d-email", "p-1")],
    )


async def cluster_uuid(client: AsyncElasticsearch) -> str:
    state = await client.cluster.state(metric="metadata", filter_path="metadata.cluster_uuid")
    return str(state["metadata"]["cluster_uuid"])


async def test_restore_into_a_second_empty_cluster(
    client: AsyncElasticsearch,
    second_cluster: AsyncElasticsearch,
    repository: FsRepository,
    tmp_path: Path,
) -> None:
    second = second_cluster
    assert await cluster_uuid(second) != await cluster_uuid(client)  # really another cluster
    if not await _shares_path_repo(second, repository.location):
        service_missing(f"the cluster at {RESTORE_URL} does not share path.repo with {URL}")
    first = make_backend(tmp_path / "installation")
    names = first.names
    wrote = written_records()
    second_sync = Elasticsearch(RESTORE_URL, request_timeout=30)
    try:
        # Cluster 1: the records go in through the real writer, then into a snapshot.
        await first.start()
        async with asyncio.timeout(10):
            await first.writer.commit(wrote)
        before = await list_index_names(client, names)
        assert len(before) > len(PARTITIONS)  # partitions of both tenants, identity, generations
        spec = fs_repository(repository.name, str(repository.location))
        await register_repository(client, spec)
        await snapshot(client, repository, names, "to-move")

        # Cluster 2: empty for this prefix; the same folder, registered read-only.
        assert await list_index_names(second, names) == []
        readonly = Repository(spec.name, "fs", {**spec.settings, "readonly": "true"})
        assert await register_repository(second, readonly) == []
        shown = await registered_repository(second, repository.name)
        assert shown is not None and shown["settings"]["readonly"] == "true"
        [listed] = await list_snapshots(second, repository.name)
        assert (listed.name, listed.prefix) == ("to-move", names.prefix)

        report = await restore_snapshot(
            second, repository.name, "to-move", names, ElasticSchema(second, names, SMALL)
        )
        assert report.indices == before and report.replaced == [] and report.warnings == []
        # The default tenant's partitions exist from the first start (partitions_ahead.py).
        assert report.tenants == sorted({*TENANTS, DEFAULT_TENANT})
        assert await list_index_names(second, names) == before

        # The templates came back with the restore, before anything wrote on cluster 2.
        templates = await second.indices.get_index_template(
            name=names.index_template("acme", "event")
        )
        assert templates["index_templates"][0]["index_template"]["composed_of"] == [
            names.component_template("event")
        ]

        # Found on cluster 2 through the aliases, with the real stores.
        by_id = ById(second, Partitions(second, names))
        events = ElasticEventStore(second, names, by_id)
        sessions = ElasticSessionStore(second, names, by_id)
        profiles = ElasticProfileStore(second, names, by_id)
        e2, u1 = wrote.events[1], wrote.events[3]
        assert await events.get("acme", "e-2") == e2
        assert await events.get("Ünï", "u-1") == u1
        assert await events.get("acme", "u-1") is None  # tenants stay apart
        big = await events.search("acme", SearchRequest(parse("event@properties.total > 50"), 10))
        assert [event.id for event in big.items] == ["e-2"]
        mine = await events.for_profiles("acme", ["p-1"])
        assert (mine.total, [event.id for event in mine.items]) == (2, ["e-2", "e-1"])
        assert await sessions.get("acme", "s-2") == wrote.sessions[1]
        both = await sessions.for_profiles("acme", ["p-1", "p-2"])
        assert sorted(session.id for session in both.items) == ["s-1", "s-2"]
        assert await profiles.get("acme", "anon-1") == wrote.profiles[0]  # by its merged id
        pro = await profiles.search(
            "acme", SearchRequest(parse("profile@traits.plan == 'pro'"), 10)
        )
        assert [profile.id for profile in pro.items] == ["p-1"]
        assert await profiles.owners("acme", ["d-email"]) == {"d-email": "p-1"}

        # A partition first written on cluster 2 gets the alias and mapping of the templates.
        june = make_event(
            "e-4", profile="p-1", event_type="purchase", time=datetime(2024, 6, 2, tzinfo=T0.tzinfo)
        )
        june.properties["total"] = 99
        new = names.partition_index("acme", "event", "2024-06")
        assert new not in before
        await second.index(
            index=new, id="e-4", document=msgspec.json.decode(codec.searchable(june)), refresh=True
        )
        big = await events.search("acme", SearchRequest(parse("event@properties.total > 50"), 10))
        assert sorted(event.id for event in big.items) == ["e-2", "e-4"]
        assert (await events.for_profiles("acme", ["p-1"])).total == 3
        mapping = await second.indices.get_mapping(index=new)
        assert mapping[new]["mappings"]["dynamic"] in (False, "false")
        # Cluster 1 never saw that write: the clusters are apart after the restore.
        first_by_id = ById(client, Partitions(client, names))
        assert await ElasticEventStore(client, names, first_by_id).get("acme", "e-4") is None
    finally:
        await first.close()
        drop_created_prefixes()
        drop_prefix(second_sync, names.prefix)
        second_sync.options(ignore_status=404).snapshot.delete_repository(name=repository.name)
        second_sync.close()


async def _shares_path_repo(client: AsyncElasticsearch, location: Path) -> bool:
    answer = await client.nodes.info(metric="settings", filter_path="nodes.*.settings.path.repo")
    for node in (answer.body.get("nodes") or {}).values():
        roots = node["settings"]["path"]["repo"]
        for root in [roots] if isinstance(roots, str) else roots:
            if location.is_relative_to(root):
                return True
    return False


async def test_restore_over_existing_indices_needs_replace(
    client: AsyncElasticsearch,
    repository: FsRepository,
    installed: tuple[Names, ElasticSchema],
) -> None:
    names, schema = installed
    expected = await fill(client, names)
    await register_repository(client, fs_repository(repository.name, str(repository.location)))
    await snapshot(client, repository, names, "before-may")
    later = names.partition_index("acme", "event", "2024-05")
    await client.index(index=later, id="late", document={"id": "late"}, refresh=True)
    await client.delete(
        index=names.partition_index("acme", "event", "2024-03"), id="event-2024-03", refresh=True
    )

    with pytest.raises(Conflict, match="restore needs an empty prefix"):
        await restore_snapshot(client, repository.name, "before-may", names, schema)
    report = await restore_snapshot(
        client, repository.name, "before-may", names, schema, replace=True
    )
    assert later in report.replaced
    # Back to the snapshot's moment as a whole: the deleted document is back, May is gone.
    assert (
        await searchable(client, names.alias("acme", "event"))
        == expected[names.alias("acme", "event")]
    )
    assert not await client.indices.exists(index=later)


async def test_restore_refuses_another_prefix_and_unknown_snapshots(
    client: AsyncElasticsearch,
    repository: FsRepository,
    installed: tuple[Names, ElasticSchema],
) -> None:
    names, schema = installed
    await fill(client, names)
    await register_repository(client, fs_repository(repository.name, str(repository.location)))
    await snapshot(client, repository, names, "theirs")
    other = Names(names.prefix + "-b")
    with pytest.raises(Conflict, match=f"TESSERA_ELASTIC_INDEX_PREFIX={names.prefix}"):
        await restore_snapshot(client, repository.name, "theirs", other, schema)
    with pytest.raises(NotFound):
        await restore_snapshot(client, repository.name, "no-such-snapshot", names, schema)
    with pytest.raises(NotFound, match="no index of prefix"):
        await start_snapshot(client, repository.name, other, "empty")


async def test_repository_checks(client: AsyncElasticsearch, repository: FsRepository) -> None:
    with pytest.raises(ConfigurationError, match=r"not inside path\.repo"):
        await register_repository(client, fs_repository(repository.name, "/definitely/elsewhere"))
    assert await registered_repository(client, repository.name) is None
    modules = await client.nodes.info(metric="modules,plugins")
    loaded = {
        item["name"]
        for node in modules["nodes"].values()
        for item in node.get("modules", []) + node.get("plugins", [])
    }
    if "repository-s3" in loaded:
        pytest.skip(
            "this cluster has repository-s3; without an S3 service the s3 path is not tested"
        )
    s3 = s3_repository(repository.name, bucket="acme-backups", endpoint="http://127.0.0.1:9")
    with pytest.raises(StorageUnavailable, match=r"repository type \[s3\] does not exist"):
        await register_repository(client, s3)


# --- the commands ---------------------------------------------------------------------------


def test_backup_commands_end_to_end() -> None:
    """repository → create → list → (loss) → restore → restore again, through the CLI."""
    repository = FsRepository()
    client = repository.client
    names = Names(unique_prefix("snapcli"))
    try:
        client.cluster.health(wait_for_status="yellow", timeout="10s")
    except Exception as error:  # noqa: BLE001 - any failure to reach it is a reason to skip
        repository.close()
        service_missing(
            f"Elasticsearch at {URL} cannot be reached ({error}); run scripts/services up"
        )
    env = {
        "ELASTIC_HOST": URL,
        "TESSERA_ELASTIC_INDEX_PREFIX": names.prefix,
        "ELASTIC_INDEX_REPLICAS": "0",
        "ELASTIC_INDEX_SHARDS": "1",
        "TESSERA_SNAPSHOT_REPOSITORY": repository.name,
        "TESSERA_SNAPSHOT_TYPE": "fs",
        "TESSERA_SNAPSHOT_LOCATION": str(repository.location),
        "COLUMNS": "250",
    }
    runner = CliRunner()
    index = names.partition_index("acme", "event", "2024-03")
    try:
        asyncio.run(prepare(names))
        client.index(index=index, id="e1", document={"id": "e1"}, refresh=True)

        shown = runner.invoke(app, ["backup", "repository", "--show"], env=env)
        assert shown.exit_code == 1 and "No repository" in shown.output
        made = runner.invoke(app, ["backup", "repository"], env=env)
        assert made.exit_code == 0, made.output
        assert "registered and verified" in made.output
        assert str(repository.location) in made.stdout

        created = runner.invoke(app, ["backup", "create", "--name", "nightly-1"], env=env)
        assert created.exit_code == 0, created.output
        assert "Snapshot nightly-1 done" in created.output and "1 indices" in created.output

        listed = runner.invoke(app, ["backup", "list"], env=env)
        assert listed.exit_code == 0, listed.output
        row = next(line for line in listed.stdout.splitlines() if "nightly-1" in line)
        assert "SUCCESS" in row and names.prefix in row

        client.indices.delete(index=index)
        restored = runner.invoke(app, ["backup", "restore", "nightly-1"], env=env)
        assert restored.exit_code == 0, restored.output
        assert "Restored nightly-1" in restored.output
        client.indices.refresh(index=names.everything())
        hits = client.search(index=names.alias("acme", "event"), query={"term": {"id": "e1"}})
        assert [hit["_id"] for hit in hits["hits"]["hits"]] == ["e1"]

        again = runner.invoke(app, ["backup", "restore", "nightly-1"], env=env)
        assert again.exit_code == 1 and "restore needs an empty prefix" in again.output
        replaced = runner.invoke(
            app, ["backup", "restore", "nightly-1", "--replace", "--yes"], env=env
        )
        assert replaced.exit_code == 0, replaced.output
        assert "Deleted 1 indices" in replaced.output

        missing = runner.invoke(app, ["backup", "restore", "nope"], env=env)
        assert missing.exit_code == 1 and "nope" in missing.output
    finally:
        asyncio.run(drop(names))
        repository.close()


async def prepare(names: Names) -> None:
    """The templates a running Tessera would have put before writing."""
    client = AsyncElasticsearch(URL, request_timeout=30)
    try:
        schema = ElasticSchema(client, names, SMALL)
        await schema.create_schema()
        await schema.ensure_tenants({"acme"})
    finally:
        await client.close()


async def drop(names: Names) -> None:
    """Every index and template the commands made under this prefix."""
    client = AsyncElasticsearch(URL, request_timeout=30)
    try:
        await ElasticSchema(client, names, SMALL).drop_everything()
    finally:
        await client.close()
