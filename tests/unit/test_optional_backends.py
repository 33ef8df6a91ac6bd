"""The distributed backends' client libraries are extras (pyproject.toml; storage/extras.py):
the embedded mode neither imports them nor needs them installed, and a mode chosen without its
extra stops with one line naming the extra to install.

Each case runs in a fresh interpreter, as an operator's would. "Not installed" is made real by
a ``sitecustomize`` that makes importing the named packages fail exactly as a missing package
does (ModuleNotFoundError), whatever this machine has installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tessera

SOURCE_ROOT = Path(tessera.__file__).resolve().parents[1]
CLIENTS = (
    "elasticsearch",
    "elastic_transport",
    "redis",
    "hiredis",
    "alembic",
    "asyncmy",
    "aiokafka",
    "pulsar",
)
# Settings that would choose a distributed backend: none of them reach the child.
MODE_PREFIXES = ("TESSERA_", "ELASTIC_", "MYSQL_", "REDIS_", "KAFKA_", "PULSAR_")

BLOCKER = """
import os
import sys

BLOCKED = frozenset(os.environ.get("TEST_NOT_INSTALLED", "").split(","))


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
"""

EMBEDDED_START = f"""
import asyncio
import json
import sys

import tessera.cli
import tessera.cli.workers
import tessera.serving.server
from tessera.api.app import create_app
from tessera.runtime import build_runtime
from tessera.settings import load_settings


async def main():
    settings = load_settings()
    runtime = build_runtime(settings)
    create_app(settings, runtime)
    await runtime.start()
    await runtime.stop()


asyncio.run(main())
print(json.dumps(sorted(m for m in {CLIENTS!r} if m in sys.modules)))
"""


def _run(
    tmp_path: Path, args: list[str], *, not_installed: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(MODE_PREFIXES)}
    child_env.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(SOURCE_ROOT)]),
        TEST_NOT_INSTALLED=",".join(not_installed),
        TESSERA_DATA_DIR=str(tmp_path / "data"),
        TESSERA_PORT="1",
        **env,
    )
    return subprocess.run(
        [sys.executable, *args],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_embedded_mode_imports_no_backend_client(tmp_path: Path) -> None:
    done = _run(tmp_path, ["-c", EMBEDDED_START])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_embedded_mode_runs_without_any_backend_installed(tmp_path: Path) -> None:
    done = _run(tmp_path, ["-m", "tessera", "doctor", "--json"], not_installed=CLIENTS)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert {check["name"] for check in report["checks"]} >= {"record store", "configuration store"}


@pytest.mark.parametrize(
    ("extra", "missing", "env"),
    [
        ("elastic", "elasticsearch", {"ELASTIC_HOST": "http://127.0.0.1:1"}),
        ("mysql", "asyncmy", {"MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": "1"}),
        ("redis", "redis", {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "1"}),
    ],
)
def test_a_mode_without_its_extra_says_which_to_install(
    tmp_path: Path, extra: str, missing: str, env: dict[str, str]
) -> None:
    done = _run(tmp_path, ["-m", "tessera", "serve"], not_installed=(missing,), **env)
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())  # the terminal may wrap the line
    assert f"pip install 'tessera-cdp[{extra}]'" in message, done.stderr
    assert f"{missing!r} client library" in message
    assert "Traceback" not in done.stderr


def test_a_queue_without_its_extra_says_which_to_install(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        ["-m", "tessera", "worker", "--burst"],
        not_installed=("aiokafka",),
        TESSERA_QUEUE="kafka",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert "pip install 'tessera-cdp[kafka]'" in message, done.stderr
    assert "Traceback" not in done.stderr
