"""`tessera doctor`, black box: `python -m tessera doctor` run as an operator runs it, with the
settings in environment variables, against real services.

- A fresh embedded installation is healthy (exit 0, every row ok); before `tessera install`
  it warns and creates nothing.
- A server on a closed port is a failed row naming it (exit 1) within seconds; a server that
  accepts connections and never answers costs the time limit, not a hang.
- For every queue backend: after `tessera install` the retention in force is the settings';
  with other settings and no install, Pulsar (the broker holds it) warns to run `tessera
  install` while the embedded log, Redis and Kafka, trimmed by the workers with the settings,
  stay ok. (Broker configurations that could lose unprocessed messages fail:
  test_doctor_queue_loss.py.)
- A running async server's worker is seen live; distributed mode reports every store.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import mariadb
from tests.support.cli import run_tessera
from tests.support.distributed import distributed_installation
from tests.support.queues import QueueFactory
from tests.support.queues_pulsar import admin_client, topic_path
from tests.support.server import free_port, running_server

# Settings of the machine running the tests must not leak into the installation under test.
_NOT_INHERITED = (
    "TESSERA_",
    "ELASTIC_",
    "MYSQL_",
    "REDIS_",
    "KAFKA_",
    "PULSAR_",
    "INSTALLATION_TOKEN",
    "LOGGING_LEVEL",
)
# Generous: a check's limit is 5 s, and the machine may be busy with other test runs.
QUICK_S = 25.0


def _tessera(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return run_tessera(env, *arguments, not_inherited=_NOT_INHERITED)


def _report(env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]]]:
    """Exit code and the JSON report's checks by name."""
    done = _tessera(env, "doctor", "--json")
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert report["ok"] is (done.returncode == 0), done.stdout
    return done.returncode, checks


def _install(env: dict[str, str]) -> None:
    done = _tessera(env, "install")
    assert done.returncode == 0, done.stderr


def test_a_fresh_embedded_installation_is_healthy(tmp_path: Path) -> None:
    env = {"TESSERA_DATA_DIR": str(tmp_path / "data")}
    _install(env)
    code, checks = _report(env)
    assert code == 0
    assert list(checks) == ["settings", "record store", "configuration store"]
    assert {check["status"] for check in checks.values()} == {"ok"}, checks
    assert checks["settings"]["facts"]["mode"] == "embedded"
    assert checks["settings"]["facts"]["ingest_mode"] == "sync"
    assert "schema version" in checks["record store"]["detail"]
    # The table says the same to a person.
    table = _tessera(env, "doctor")
    assert table.returncode == 0, table.stderr
    assert "record store" in table.stdout and "Healthy: 3 ok, 0 warning, 0 failed" in table.stdout


def test_before_install_it_warns_and_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"TESSERA_DATA_DIR": str(data), "TESSERA_INGEST_MODE": "async"}
    code, checks = _report(env)
    assert code == 0, checks  # nothing is broken: the first start would create it all
    for name in ("record store", "configuration store", "queue"):
        assert checks[name]["status"] == "warning", checks[name]
        assert "tessera install" in checks[name]["detail"]
    assert not list(data.glob("*")), "doctor created files in the data dir"


def test_settings_that_do_not_load_are_a_failed_row(tmp_path: Path) -> None:
    env = {"TESSERA_DATA_DIR": str(tmp_path / "data"), "TESSERA_PORT": "not-a-port"}
    code, checks = _report(env)
    assert code == 1
    assert checks["settings"]["status"] == "failed"
    assert "TESSERA_PORT" in checks["settings"]["detail"]


def _closed_port_env(service: str, port: int) -> dict[str, str]:
    return {
        "redis": {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port)},
        "elasticsearch": {"ELASTIC_HOST": f"http://127.0.0.1:{port}"},
        "mysql": {
            "MYSQL_HOST": "127.0.0.1",
            "MYSQL_PORT": str(port),
            "MYSQL_USERNAME": "tessera",
            "MYSQL_PASSWORD": "a-password-never-shown-7",
        },
        "kafka": {
            "TESSERA_QUEUE": "kafka",
            "TESSERA_INGEST_MODE": "async",
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        },
    }[service]


@pytest.mark.parametrize(
    ("service", "row"),
    [
        ("redis", "redis"),
        ("elasticsearch", "record store"),
        ("mysql", "configuration store"),
        ("kafka", "queue"),
    ],
)
def test_a_server_on_a_closed_port_is_a_failed_row_naming_it(
    service: str, row: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {"TESSERA_DATA_DIR": str(tmp_path / "data"), **_closed_port_env(service, port)}
    started = time.monotonic()
    code, checks = _report(env)
    took = time.monotonic() - started
    print(f"{service} on closed port {port}: {took:.1f} s; {checks[row]['detail']}")
    assert code == 1
    assert checks[row]["status"] == "failed"
    assert f"127.0.0.1:{port}" in checks[row]["detail"]
    assert took < QUICK_S
    assert "a-password-never-shown-7" not in json.dumps(checks)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def test_a_silent_server_costs_the_time_limit_not_a_hang(silent_port: int, tmp_path: Path) -> None:
    env = {
        "TESSERA_DATA_DIR": str(tmp_path / "data"),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(silent_port),
    }
    started = time.monotonic()
    code, checks = _report(env)
    took = time.monotonic() - started
    assert code == 1
    assert checks["redis"]["status"] == "failed"
    assert checks["redis"]["detail"] == f"REDIS_HOST=127.0.0.1:{silent_port}: no answer within 5 s"
    assert 5 <= took < QUICK_S


# --- the queue and its retention, per backend ------------------------------------------------


@pytest.fixture
def own_pulsar_namespace(queue_factory: QueueFactory) -> Iterator[dict[str, str]]:
    """Pulsar keeps retention per namespace: one of the test's own, so that other tests that
    set public/default's meanwhile cannot change what this one reads."""
    if queue_factory.backend != "pulsar":
        yield {}
        return
    token = queue_factory.environment()["PULSAR_AUTH_TOKEN"]
    namespace = f"public/tessera-doctor-{uuid.uuid4().hex[:10]}"
    topic = queue_factory.environment()["TESSERA_QUEUE_TOPIC"]

    async def admin(method: str, path: str, **options: Any) -> int:
        async with admin_client(token) as client:
            return (await client.request(method, path, **options)).status_code

    assert asyncio.run(admin("PUT", f"/admin/v2/namespaces/{namespace}")) == 204
    try:
        yield {"PULSAR_NAMESPACE": namespace}
    finally:
        force = {"params": {"force": "true"}}
        asyncio.run(admin("DELETE", f"{topic_path(topic, namespace)}/partitions", **force))
        assert asyncio.run(admin("DELETE", f"/admin/v2/namespaces/{namespace}")) == 204


def _retention_row(env: dict[str, str], want: str, seconds: float = 15.0) -> dict[str, Any]:
    """The retention row once its status is ``want``: a Kafka config change reaches the broker's
    metadata a moment after `tessera install` returned."""
    deadline = time.monotonic() + seconds
    while True:
        code, checks = _report(env)
        assert code == 0, checks  # a warning never fails the report
        row = checks["queue retention"]
        if row["status"] == want or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


def test_the_retention_in_force_is_the_settings_after_install(
    queue_factory: QueueFactory,
    own_pulsar_namespace: dict[str, str],
    tmp_path: Path,
) -> None:
    backend = queue_factory.backend
    env = {
        **queue_factory.environment(),
        **own_pulsar_namespace,
        "TESSERA_INGEST_MODE": "async",
        "TESSERA_DATA_DIR": str(tmp_path / "data"),
        "TESSERA_QUEUE_RETENTION_HOURS": "48",
        "TESSERA_QUEUE_RETENTION_MB": "256",
    }
    _install(env)
    row = _retention_row(env, "ok")
    assert row["status"] == "ok", row
    assert row["facts"]["applied"] == {"hours": 48, "megabytes": 256}
    assert row["facts"]["settings"] == {"hours": 48, "megabytes": 256}
    _, checks = _report(env)
    assert checks["queue"]["status"] == "ok", checks["queue"]
    assert checks["queue"]["facts"]["backlog"] == 0
    assert checks["dead letters"]["status"] == "ok"
    # Nobody drains this queue: in async mode that deserves a warning.
    assert checks["queue workers"]["status"] == "warning"

    changed = {**env, "TESSERA_QUEUE_RETENTION_HOURS": "72", "TESSERA_QUEUE_RETENTION_MB": "512"}
    code, checks = _report(changed)
    assert code == 0
    row = checks["queue retention"]
    assert row["facts"]["settings"] == {"hours": 72, "megabytes": 512}
    if backend == "pulsar":
        # The broker still holds what the last install set.
        assert row["status"] == "warning", row
        assert row["facts"]["applied"] == {"hours": 48, "megabytes": 256}
        assert "run `tessera install`" in row["detail"]
    else:
        # Trimmed by the workers with the settings they start with: nothing to apply.
        assert row["status"] == "ok", row
        assert row["facts"]["applied"] == {"hours": 72, "megabytes": 512}


def test_a_running_async_server_has_a_live_worker(tmp_path: Path) -> None:
    extra = {"TESSERA_INGEST_MODE": "async", "TESSERA_WORKERS": "1"}
    with running_server(tmp_path / "data", extra) as server:
        env = {**extra, "TESSERA_DATA_DIR": str(server.data_dir)}
        deadline = time.monotonic() + 20
        while True:
            code, checks = _report(env)
            if checks["queue workers"]["status"] == "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert code == 0
    assert checks["queue workers"]["status"] == "ok", checks["queue workers"]
    assert checks["queue workers"]["facts"]["live"] == 1
    assert checks["queue"]["status"] == "ok"


def test_a_distributed_installation_reports_every_store(tmp_path: Path) -> None:
    with distributed_installation("doctor") as installation:
        env = {**installation.env, "TESSERA_DATA_DIR": str(tmp_path / "data")}
        _install(env)
        code, checks = _report(env)
        assert code == 0, checks
        assert checks["settings"]["facts"]["mode"] == "distributed"
        for name in ("record store", "configuration store", "redis"):
            assert checks[name]["status"] == "ok", checks[name]
        assert "ELASTIC_HOST=" in checks["record store"]["detail"]
        assert "MYSQL_HOST=" in checks["configuration store"]["detail"]
        # The shared development cluster may be yellow because of other tests' indices.
        assert checks["elasticsearch cluster"]["status"] in ("ok", "warning")
        assert checks["elasticsearch cluster"]["facts"]["health"] in ("green", "yellow")
        shapes = checks["elasticsearch index settings"]
        assert shapes["status"] == "ok", shapes
        assert "event 1/0" in shapes["detail"]
        # Settings changed since the templates were put: a warning, until the next install.
        code, checks = _report({**env, "ELASTIC_INDEX_SHARDS": "2"})
        assert code == 0
        shapes = checks["elasticsearch index settings"]
        assert shapes["status"] == "warning" and "settings say 2/0" in shapes["detail"], shapes
        assert mariadb.PASSWORD not in json.dumps(checks)
