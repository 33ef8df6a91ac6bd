"""Installation and authentication over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.server import ADMIN_EMAIL, RunningServer, running_server

MANAGEMENT_ENDPOINTS = [
    ("GET", "/event-sources"),
    ("GET", "/event-source/x"),
    ("POST", "/event-source"),
    ("PATCH", "/event-source/x"),
    ("DELETE", "/event-source/x"),
    ("GET", "/profile/x"),
    ("GET", "/profile/x/events"),
    ("GET", "/session/x"),
    ("GET", "/event/x"),
    ("DELETE", "/user/token"),
]


@pytest.mark.parametrize(("method", "path"), MANAGEMENT_ENDPOINTS)
def test_management_needs_a_token(anonymous: httpx.Client, method: str, path: str) -> None:
    answer = anonymous.request(method, path)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "token" in answer.json()["detail"]


def test_wrong_password_is_refused(server: RunningServer) -> None:
    answer = httpx.post(
        f"{server.base_url}/user/token", data={"username": ADMIN_EMAIL, "password": "wrong-one"}
    )
    assert answer.status_code == 401
    assert answer.json()["detail"] == "wrong username or password"
    unknown = httpx.post(
        f"{server.base_url}/user/token", data={"username": "x@y.z", "password": "wrong-one"}
    )
    assert unknown.status_code == 401 and unknown.json() == answer.json()


def test_token_shape_and_revocation(server: RunningServer) -> None:
    answer = httpx.post(
        f"{server.base_url}/user/token",
        data={"username": ADMIN_EMAIL, "password": server.admin_password},
    ).json()
    assert answer["token_type"] == "bearer" and answer["expires_in"] == 3600
    client = server.client(answer["access_token"])
    assert client.get("/event-sources").status_code == 200
    assert client.delete("/user/token").status_code == 204
    assert client.get("/event-sources").status_code == 401


def test_token_lifetime_follows_the_setting(tmp_path: Path) -> None:
    # Refusing an expired token is the token store's rule, covered by the contract suite
    # without waiting a minute; here: the server issues tokens with TESSERA_TOKEN_TTL.
    with running_server(tmp_path / "data", {"TESSERA_TOKEN_TTL": "120"}) as server:
        answer = httpx.post(
            f"{server.base_url}/user/token",
            data={"username": ADMIN_EMAIL, "password": server.admin_password},
        ).json()
        assert answer["expires_in"] == 120


def test_no_admin_without_env_and_install_creates_it(tmp_path: Path) -> None:
    token = "a-long-installation-token-for-tests"
    env = {"INSTALLATION_TOKEN": token}
    data_dir = tmp_path / "fresh"
    server = _server_without_admin(data_dir, env)
    try:
        status = httpx.get(f"{server.base_url}/install").json()
        assert status == {"schema_installed": True, "admin_exists": False}

        wrong = httpx.post(
            f"{server.base_url}/install",
            json={"token": "wrong", "username": "boss@example.com", "password": "s3cret-pass"},
        )
        assert wrong.status_code == 403 and "token" in wrong.json()["detail"]

        weak = httpx.post(
            f"{server.base_url}/install",
            json={"token": token, "username": "boss@example.com", "password": "short"},
        )
        assert weak.status_code == 422 and "password" in weak.json()["detail"]

        done = httpx.post(
            f"{server.base_url}/install",
            json={"token": token, "username": "boss@example.com", "password": "s3cret-pass"},
        ).json()
        assert done == {"schema_created": False, "admin_created": True, "admin_exists": True}

        again = httpx.post(
            f"{server.base_url}/install",
            json={"token": token, "username": "other@example.com", "password": "s3cret-pass"},
        ).json()
        assert again["admin_created"] is False and again["admin_exists"] is True

        signed_in = httpx.post(
            f"{server.base_url}/user/token",
            data={"username": "boss@example.com", "password": "s3cret-pass"},
        )
        assert signed_in.status_code == 200
    finally:
        server.stop()


def test_development_token_is_generated_into_a_private_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = _server_without_admin(data_dir, {})
    try:
        token_file = data_dir / "installation-token"
        assert token_file.stat().st_mode & 0o077 == 0
        token = token_file.read_text().strip()
        assert len(token) >= 24
        assert token not in server.log()
        answer = httpx.post(
            f"{server.base_url}/install",
            json={"token": token, "username": "dev@example.com", "password": "dev-password"},
        )
        assert answer.json()["admin_created"] is True
    finally:
        server.stop()


def _server_without_admin(data_dir: Path, env: dict[str, str]) -> RunningServer:
    from tests.support.server import start_server

    return start_server(data_dir, {**env, "TESSERA_ADMIN_EMAIL": "", "TESSERA_ADMIN_PASSWORD": ""})
