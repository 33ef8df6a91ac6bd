"""Retention on a real Elasticsearch: only partitions whose whole range is old enough go.

Partition indices are made directly with the names of naming.py (the templates give them
their mapping and alias), one document each, and retention runs with a fixed `now`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch
from typer.testing import CliRunner

from tessera.cli import app
from tessera.storage.elastic.inventory import list_index_names
from tessera.storage.elastic.naming import Names
from tessera.storage.elastic.retention import (
    apply_retention,
    ilm_state,
    install_lifecycle,
    plan_retention,
    policy_name,
)
from tests.support.elastic_cluster import URL, installation, reachable_client, unique_prefix
from tests.support.services import service_missing

NOW = datetime(2024, 5, 1, tzinfo=UTC)
AGES = {"event": timedelta(days=30), "session": timedelta(days=30)}
# (tenant, kind, partition) -> expired on NOW with AGES?
PARTITIONS = {
    ("acme", "event", "2024-01"): True,
    ("acme", "event", "2024-02"): True,
    # March ended on 1 April: exactly 30 days before NOW, not more, so it stays.
    ("acme", "event", "2024-03"): False,
    ("acme", "event", "2024-04"): False,
    ("acme", "event", "2024-w09"): True,  # 26 Feb - 4 Mar
    ("acme", "event", "2024-w14"): False,  # 1 - 8 Apr
    ("acme", "event", "2024-03-30"): True,
    ("acme", "event", "2024-03-31"): False,
    ("acme", "session", "2023-q4"): True,
    ("acme", "session", "2024-q1"): False,
    # Profiles have no retention age here: kept forever, however old.
    ("acme", "profile", "2019"): False,
    ("Ünï", "event", "2023-12"): True,
    ("Ünï", "event", "2024-04-30"): False,
}


@pytest.fixture
async def client() -> AsyncIterator[AsyncElasticsearch]:
    client = await reachable_client()
    yield client
    await client.close()


@pytest.fixture
async def names(client: AsyncElasticsearch) -> AsyncIterator[Names]:
    async with installation(client, unique_prefix("ret")) as (names, schema):
        await schema.ensure_tenants({tenant for tenant, _, _ in PARTITIONS})
        yield names


async def put_doc(client: AsyncElasticsearch, index: str, doc_id: str, **fields: Any) -> None:
    await client.index(index=index, id=doc_id, document={"id": doc_id, **fields})


async def fill(client: AsyncElasticsearch, names: Names) -> dict[str, bool]:
    """Every partition of PARTITIONS with one document; index name -> expected to expire."""
    expected = {}
    for (tenant, kind, suffix), expires in PARTITIONS.items():
        index = names.partition_index(tenant, kind, suffix)
        await put_doc(client, index, f"{kind}-{suffix}", tenant=tenant)
        expected[index] = expires
    await put_doc(client, names.single_index("acme", "identity"), "identity-1", tenant="acme")
    await client.indices.refresh(index=names.everything())
    return expected


async def test_retention_deletes_only_expired_partitions(
    client: AsyncElasticsearch, names: Names
) -> None:
    expected = await fill(client, names)
    # Indices of another prefix that starts the same, and an index of ours that is no partition
    # we made: retention must not touch either, however old they look.
    other = Names(names.prefix + "-other")
    foreign = other.partition_index("acme", "event", "2000-01")
    odd = f"{names.prefix}.acme.event.v1-2000-01-copy"
    await client.indices.create(index=foreign, settings={"number_of_replicas": 0})
    await client.indices.create(index=odd, settings={"number_of_replicas": 0})
    try:
        before = set(await list_index_names(client, names))
        planned = await plan_retention(client, names, NOW, AGES)
        assert {expiry.index for expiry in planned} == {i for i, gone in expected.items() if gone}
        by_index = {expiry.index: expiry for expiry in planned}
        march_30 = by_index[names.partition_index("acme", "event", "2024-03-30")]
        assert (march_30.kind, march_30.tenant, march_30.partition) == (
            "event",
            "acme",
            "2024-03-30",
        )
        assert march_30.ends_at == datetime(2024, 3, 31, tzinfo=UTC)
        assert by_index[names.partition_index("Ünï", "event", "2023-12")].tenant == "Ünï"

        dry = await apply_retention(client, names, NOW, AGES, dry_run=True)
        assert dry.dry_run and dry.deleted == []
        assert [expiry.index for expiry in dry.expired] == [expiry.index for expiry in planned]
        assert set(await list_index_names(client, names)) == before  # nothing deleted

        report = await apply_retention(client, names, NOW, AGES)
        assert sorted(report.deleted) == sorted(i for i, gone in expected.items() if gone)
        after = set(await list_index_names(client, names))
        assert after == before - set(report.deleted)
        assert odd in after and names.single_index("acme", "identity") in after
        assert await client.indices.exists(index=foreign)

        # What is left is still read through the alias: the kept partitions' documents only.
        await client.indices.refresh(index=names.everything())
        hits = await client.search(index=names.alias("acme", "event"), size=50)
        found = {hit["_id"] for hit in hits["hits"]["hits"]}
        kept = {
            f"event-{suffix}"
            for (tenant, kind, suffix), gone in PARTITIONS.items()
            if tenant == "acme" and kind == "event" and not gone
        }
        assert found == kept

        # A second run finds nothing more to do.
        again = await apply_retention(client, names, NOW, AGES)
        assert again.expired == [] and again.deleted == []
    finally:
        await client.indices.delete(index=f"{foreign},{odd}", ignore_unavailable=True)


async def test_no_age_keeps_everything(client: AsyncElasticsearch, names: Names) -> None:
    expected = await fill(client, names)
    far_future = NOW + timedelta(days=365 * 30)
    assert await plan_retention(client, names, far_future, {}) == []
    report = await apply_retention(client, names, far_future, {"session": timedelta(days=1)})
    assert {expiry.kind for expiry in report.expired} == {"session"}
    left = set(await list_index_names(client, names))
    assert all(index in left for index in expected if ".event." in index or ".profile." in index)


async def test_ages_of_kinds_that_are_not_partitioned_are_refused(
    client: AsyncElasticsearch, names: Names
) -> None:
    with pytest.raises(ValueError, match="not 'identity'"):
        await plan_retention(client, names, NOW, {"identity": timedelta(days=1)})


async def test_without_ilm_tessera_retention_applies(
    client: AsyncElasticsearch, names: Names
) -> None:
    state, why = await ilm_state(client)
    if state != "unavailable":
        pytest.skip(f"this cluster has ILM ({why}); see test_with_ilm_policies_are_attached")
    expected = await fill(client, names)
    report = await install_lifecycle(client, names, NOW, AGES)
    assert report.state == "unavailable"
    assert "ILM not available" in report.message
    assert "Tessera's own retention applies" in report.message
    assert report.policies == [] and report.attached == []
    assert set(expected) <= set(await list_index_names(client, names))


async def test_with_ilm_policies_are_attached(client: AsyncElasticsearch, names: Names) -> None:
    state, why = await ilm_state(client)
    if state == "unavailable":
        pytest.skip(f"ILM branch not testable here: this cluster has no ILM ({why})")
    expected = await fill(client, names)
    try:
        report = await install_lifecycle(client, names, NOW, AGES)
        assert sorted(report.policies) == [
            policy_name(names, "event"),
            policy_name(names, "session"),
        ]
        live = sorted(i for i, gone in expected.items() if not gone and ".profile." not in i)
        assert sorted(report.attached) == live
        march = names.partition_index("acme", "event", "2024-03")
        answer = await client.indices.get_settings(index=march, flat_settings=True)
        settings = answer[march]["settings"]
        assert settings["index.lifecycle.name"] == policy_name(names, "event")
        assert int(settings["index.lifecycle.origination_date"]) == int(
            datetime(2024, 4, 1, tzinfo=UTC).timestamp() * 1000
        )
        # Unsetting a kind's age detaches and removes its policy.
        await install_lifecycle(client, names, NOW, {"event": AGES["event"]})
        session = names.partition_index("acme", "session", "2024-q1")
        answer = await client.indices.get_settings(index=session, flat_settings=True)
        assert "index.lifecycle.name" not in answer[session]["settings"]
    finally:
        await install_lifecycle(client, names, NOW, {})


# --- the command ------------------------------------------------------------------------------


def test_storage_retention_command() -> None:
    """End to end through the CLI (which runs its own event loop, so this test is sync)."""
    client = Elasticsearch(URL, request_timeout=30)
    names = Names(unique_prefix("retcli"))
    old = names.partition_index("acme", "event", "2000-01")
    new = names.partition_index("acme", "event", "2999-01")
    session = names.partition_index("acme", "session", "2000-q1")
    try:
        try:
            client.cluster.health(wait_for_status="yellow", timeout="10s")
        except Exception as error:  # noqa: BLE001 - any failure to reach it is a reason to skip
            service_missing(
                f"Elasticsearch at {URL} cannot be reached ({error}); scripts/services up"
            )
        for index in (old, new, session):
            client.index(index=index, id="d", document={"id": "d"}, refresh=True)
        env = {
            "ELASTIC_HOST": URL,
            "TESSERA_ELASTIC_INDEX_PREFIX": names.prefix,
            "TESSERA_RETENTION_EVENT_DAYS": "30",
            "TESSERA_RETENTION_SESSION_DAYS": None,
            "TESSERA_RETENTION_PROFILE_DAYS": None,
            "COLUMNS": "250",
        }
        runner = CliRunner()

        dry = runner.invoke(app, ["storage", "retention", "--dry-run"], env=env)
        assert dry.exit_code == 0, dry.output
        assert old in dry.stdout and new not in dry.stdout and session not in dry.stdout
        assert "1 partitions would be deleted" in dry.output
        assert client.indices.exists(index=old)

        real = runner.invoke(app, ["storage", "retention"], env=env)
        assert real.exit_code == 0, real.output
        assert "Deleted 1 partitions" in real.output
        assert "ILM" in real.output
        assert not client.indices.exists(index=old)
        assert client.indices.exists(index=new) and client.indices.exists(index=session)
    finally:
        client.indices.delete(index=names.everything(), ignore_unavailable=True)
        client.close()


def test_commands_need_the_distributed_mode() -> None:
    env = {key: value for key, value in os.environ.items() if key != "ELASTIC_HOST"}
    for command in (["storage", "retention"], ["backup", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "tessera", *command],
            env={**env, "COLUMNS": "250"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "applies to the distributed mode only" in done.stderr
        assert "ELASTIC_HOST is not set" in done.stderr
