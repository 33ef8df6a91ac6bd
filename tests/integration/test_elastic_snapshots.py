"""Backups on a real Elasticsearch: snapshot, lose every index, restore, read through the aliases.

There is one node here, so "restore into an empty cluster" is played by deleting every index
and template of the test's prefix before restoring into the same node. Each test registers an
fs repository of its own under the node's path.repo and removes it (and its files) afterwards.
No S3 service is available: the s3 settings are validated locally (tests/unit), and registering
one here shows how a cluster without the repository-s3 module refuses it.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch, NotFoundError
from typer.testing import CliRunner

from tessera.cli import app
from tessera.errors import ConfigurationError, Conflict, NotFound, StorageUnavailable
from tessera.storage.elastic.inventory import list_index_names
from tessera.storage.elastic.naming import Names
from tessera.storage.elastic.schema import SCHEMA_VERSION, ElasticSchema
from tessera.storage.elastic.snapshots import (
    fs_repository,
    list_snapshots,
    register_repository,
    registered_repository,
    restore_snapshot,
    s3_repository,
    start_snapshot,
    wait_for_snapshot,
)
from tests.support.elastic_cluster import SMALL, URL, installation, reachable_client, unique_prefix

TENANTS = ("acme", "Ünï")
# kind -> partitions with one document each, per tenant.
PARTITIONS = {"event": ("2024-03", "2024-04"), "session": ("2024-q1",), "profile": ("2024",)}


def path_repo(client: Elasticsearch) -> Path:
    answer = client.nodes.info(metric="settings", filter_path="nodes.*.settings.path.repo")
    for node in (answer.body.get("nodes") or {}).values():
        roots = node["settings"]["path"]["repo"]
        return Path(roots[0] if isinstance(roots, list) else roots)
    pytest.skip(f"Elasticsearch at {URL} has no path.repo; fs snapshots cannot be tested")


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
        pytest.skip(f"Elasticsearch at {URL} cannot be reached ({error}); run scripts/services up")
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
