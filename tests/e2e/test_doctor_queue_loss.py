"""`tessera doctor` FAILS (exit 1) on a queue whose broker could delete messages no worker has
processed yet, says what to change, and passes on what `tessera install` sets by default.

Black box: `python -m tessera install` and `doctor --json` as an operator runs them; the broker
is changed behind Tessera's back with the broker's own admin API, as an operator (or an older
Tessera's install) would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.cli import run_tessera
from tests.support.queues_kafka import kafka_queue, reachable_admin
from tests.support.queues_pulsar import admin_client, pulsar_queue, topic_path

_NOT_INHERITED = ("TESSERA_", "REDIS_", "KAFKA_", "PULSAR_", "MYSQL_", "ELASTIC_")
PARTITIONS = 4


def _tessera(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return run_tessera(env, *arguments, not_inherited=_NOT_INHERITED)


def _retention_row(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = _tessera(env, "doctor", "--json")
    assert "Traceback" not in done.stderr, done.stderr
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    return done.returncode, checks["queue retention"]


def _settled_row(env: dict[str, str], status: str, seconds: float = 15.0) -> tuple[int, Any]:
    """A Kafka config change reaches the broker's metadata a moment after it was made."""
    deadline = time.monotonic() + seconds
    while True:
        code, row = _retention_row(env)
        if row["status"] == status or time.monotonic() > deadline:
            return code, row
        time.sleep(0.5)


def _install(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = _tessera(env, "install")
    # The console writes to stderr: one text to look in.
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout + done.stderr, "")


async def _set_topic_configs(topic: str, configs: dict[str, str]) -> None:
    from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
        ConfigResource,
        ConfigResourceType,
    )

    admin = await reachable_admin()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()


def test_kafka_topic_retention_that_could_delete_unprocessed_records_fails(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        async with kafka_queue("doctor-kafka-loss", tmp_path, PARTITIONS) as queues:
            env = {
                **queues.environment(),
                "TESSERA_INGEST_MODE": "async",
                "TESSERA_DATA_DIR": str(tmp_path / "data"),
            }
            done = await asyncio.to_thread(_install, env)
            assert done.returncode == 0, done.stderr + done.stdout
            assert "retention.ms=-1, retention.bytes=-1" in done.stdout
            code, row = await asyncio.to_thread(_settled_row, env, "ok")
            assert code == 0 and row["status"] == "ok", row
            assert row["facts"]["risks"] == []

            # What the old install set (the settings' defaults spread over the partitions).
            await _set_topic_configs(
                queues.topic, {"retention.ms": "2592000000", "retention.bytes": "134217728"}
            )
            code, row = await asyncio.to_thread(_settled_row, env, "failed")
            assert code == 1, row
            assert row["status"] == "failed"
            assert "retention.ms=2592000000" in row["detail"]
            assert "retention.bytes=134217728" in row["detail"]
            assert "set it to -1" in row["detail"]

            await _set_topic_configs(queues.topic, {"cleanup.policy": "compact"})
            code, row = await asyncio.to_thread(_settled_row, env, "failed")
            assert code == 1 and "cleanup.policy=compact" in row["detail"], row

            # `tessera install` puts it right.
            done = await asyncio.to_thread(_install, env)
            assert done.returncode == 0, done.stderr + done.stdout
            code, row = await asyncio.to_thread(_settled_row, env, "ok")
            assert code == 0 and row["status"] == "ok", row

    asyncio.run(run())


def test_pulsar_in_public_default_fails_and_install_applies_nothing_there(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        async with pulsar_queue("doctor-pulsar-shared", tmp_path, PARTITIONS) as factory:
            env = {
                **factory.environment(),
                "PULSAR_NAMESPACE": "public/default",
                "TESSERA_INGEST_MODE": "async",
                "TESSERA_DATA_DIR": str(tmp_path / "data"),
            }
            done = await asyncio.to_thread(_install, env)
            assert done.returncode == 1
            assert "PULSAR_NAMESPACE=public/default is shared" in done.stdout
            code, row = await asyncio.to_thread(_retention_row, env)
            assert code == 1 and row["status"] == "failed", row
            assert "shared namespace public/default" in row["detail"]
            # Not even the topic was made there. (Its policies are not compared: other
            # applications, other tests included, change them — the reason to stay out.)
            async with admin_client(factory.token) as admin:
                topic = f"{topic_path(factory.topic, 'public/default')}/partitions"
                assert (await admin.get(topic)).status_code == 404

    asyncio.run(run())


def test_pulsar_defaults_pass_and_a_ttl_fails(tmp_path: Path) -> None:
    async def run() -> None:
        async with pulsar_queue("doctor-pulsar-ttl", tmp_path, PARTITIONS) as factory:
            env = {
                **factory.environment(),
                "TESSERA_INGEST_MODE": "async",
                "TESSERA_DATA_DIR": str(tmp_path / "data"),
            }
            done = await asyncio.to_thread(_install, env)
            assert done.returncode == 0, done.stderr + done.stdout
            assert "producer_exception" in done.stdout
            code, row = await asyncio.to_thread(_retention_row, env)
            assert code == 0 and row["status"] == "ok", row

            namespace = f"/admin/v2/namespaces/{factory.namespace}"
            async with admin_client(factory.token) as admin:
                answer = await admin.post(f"{namespace}/messageTTL", json=3600)
                assert answer.status_code == 204, answer.text
            code, row = await asyncio.to_thread(_settled_row, env, "failed")
            assert code == 1 and "message TTL of 3600 s" in row["detail"], row

    asyncio.run(run())
