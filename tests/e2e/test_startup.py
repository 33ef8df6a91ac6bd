"""Start-up: bad settings stop it with a message naming the variable; production refuses weak
secrets; API_DOCS=no hides the docs; a clean stop keeps the data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.server import running_server


def run_serve(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    clean.update({"TESSERA_DATA_DIR": str(tmp_path / "data"), "TESSERA_PORT": "1"})
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "tessera", "serve"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOGGING_LEVEL", "loud"),
        ("TESSERA_PORT", "not-a-port"),
        ("TESSERA_WRITER_BATCH_SIZE", "0"),
        ("API_DOCS", "maybe"),
        ("TESSERA_ENV", "staging"),
        ("TESSERA_SQLITE_SYNCHRONOUS", "OFF"),
    ],
)
def test_bad_value_stops_start_up_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = run_serve({variable: value}, tmp_path)
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "not set"),
        ("tracardi", "well-known"),
        ("short-token", "fewer than 16"),
        # Long enough, but guessable: one character, a run, a repeated word.
        ("aaaaaaaaaaaaaaaa", "predictable"),
        ("abcdefghijklmnopqrstuvwxyz", "predictable"),
        ("passwordpassword", "predictable"),
    ],
)
def test_production_refuses_missing_or_weak_installation_token(
    tmp_path: Path, token: str | None, reason: str
) -> None:
    env = {"TESSERA_ENV": "production"}
    if token is not None:
        env["INSTALLATION_TOKEN"] = token
    result = run_serve(env, tmp_path)
    assert result.returncode == 2
    assert "INSTALLATION_TOKEN" in result.stderr and reason in result.stderr
    assert token is None or token not in result.stderr


@pytest.mark.parametrize("password", ["admin", "zzzzzzzzzzzzzzzzzzzzzzzz"])
def test_production_refuses_weak_admin_password_without_showing_it(
    tmp_path: Path, password: str
) -> None:
    result = run_serve(
        {
            "TESSERA_ENV": "production",
            "INSTALLATION_TOKEN": "a-long-and-random-installation-secret",
            "TESSERA_ADMIN_EMAIL": "ops@example.com",
            "TESSERA_ADMIN_PASSWORD": password,
        },
        tmp_path,
    )
    assert result.returncode == 2
    assert "TESSERA_ADMIN_PASSWORD" in result.stderr
    assert f"{password}'" not in result.stderr and password * 2 not in result.stderr


def test_production_creates_no_default_source(tmp_path: Path) -> None:
    env = {
        "TESSERA_ENV": "production",
        "INSTALLATION_TOKEN": "a-long-and-random-installation-secret",
    }
    with running_server(
        tmp_path / "data", env, admin_password="a-long-production-password"
    ) as server:
        sources = server.client(server.token()).get("/event-sources").json()
        assert sources == {"total": 0, "result": []}
        assert not (tmp_path / "data" / "installation-token").exists()


def test_api_docs_can_be_switched_off(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", {"API_DOCS": "no"}) as server:
        assert httpx.get(f"{server.base_url}/docs").status_code == 404
        assert httpx.get(f"{server.base_url}/openapi.json").status_code == 404
        assert httpx.get(f"{server.base_url}/health").status_code == 200


def test_clean_stop_and_restart_keep_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir, admin_password="restart-password") as server:
        client = server.client(server.token())
        source = client.post("/event-source", json={"id": "keep", "name": "Keep"}).json()
        tracked = httpx.post(
            f"{server.base_url}/track",
            json={"source": {"id": source["id"]}, "events": [{"type": "page-view"}]},
        ).json()
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean stop too.
    assert server.process.returncode in (0, -15)
    assert "Traceback" not in server.log()
    with running_server(data_dir, admin_password="restart-password") as server:
        client = server.client(server.token())
        assert client.get("/event-source/keep").json()["name"] == "Keep"
        assert client.get(f"/event/{tracked['events'][0]}").status_code == 200
        assert client.get(f"/profile/{tracked['profile']['id']}").json()["stats"]["events"] == 1
