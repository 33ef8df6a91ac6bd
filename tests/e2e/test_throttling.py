"""Throttling (issue 12, "Denial of service"): sign-ins, installation attempts and the profiles
one address starts are limited per minute; past a limit the answer is 429 with Retry-After.
Embedded (buckets in the process) and distributed (buckets in Redis, shared by two processes
serving one installation)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.distributed import distributed_installation
from tests.support.modes import server_in_mode, wait_until_drained
from tests.support.server import RunningServer, running_server

LIMITS = {
    "TESSERA_THROTTLE_LOGIN_PER_MINUTE": "3",
    "TESSERA_THROTTLE_INSTALL_PER_MINUTE": "2",
    "TESSERA_THROTTLE_NEW_PROFILES_PER_MINUTE": "5",
    "INSTALLATION_TOKEN": "a-long-installation-token-for-tests",
}


@pytest.fixture(scope="module", params=["embedded-sync", "embedded-async", "distributed-sync"])
def throttled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, httpx.Client]]:
    data_dir = tmp_path_factory.mktemp("throttled") / "data"
    with server_in_mode(request.param, data_dir, LIMITS) as server:
        api = server.client(server.token())  # one of the 3 sign-ins of this minute
        api.post("/event-source", json={"id": "web", "name": "Web"}).raise_for_status()
        yield server, api


def _too_many(answer: httpx.Response, setting: str) -> None:
    assert answer.status_code == 429, answer.text
    assert int(answer.headers["retry-after"]) >= 1
    assert setting in answer.json()["detail"]


def _sign_in(base_url: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/user/token", data={"username": "admin@example.com", "password": password}
    )


def test_sign_ins_past_the_limit_get_429(throttled: tuple[RunningServer, httpx.Client]) -> None:
    server, _api = throttled
    assert _sign_in(server.base_url, "wrong").status_code == 401
    assert _sign_in(server.base_url, "wrong").status_code == 401
    _too_many(_sign_in(server.base_url, "wrong"), "TESSERA_THROTTLE_LOGIN_PER_MINUTE")
    # The right password waits too: guessing must not be told apart by the answer.
    _too_many(_sign_in(server.base_url, server.admin_password), "TESSERA_THROTTLE_LOGIN")


def test_install_attempts_past_the_limit_get_429(
    throttled: tuple[RunningServer, httpx.Client],
) -> None:
    server, _api = throttled
    for _ in range(2):
        answer = httpx.post(f"{server.base_url}/install", json={"token": "guess"})
        assert answer.status_code in (401, 403), answer.text
    answer = httpx.post(f"{server.base_url}/install", json={"token": "guess"})
    _too_many(answer, "TESSERA_THROTTLE_INSTALL_PER_MINUTE")


def test_new_profiles_past_the_limit_get_429_known_visitors_never(
    throttled: tuple[RunningServer, httpx.Client],
) -> None:
    server, api = throttled
    visitor = server.client()

    def track(**ids: object) -> httpx.Response:
        return visitor.post(
            "/track", json={"source": {"id": "web"}, "events": [{"type": "page-view"}], **ids}
        )

    first = track(session={"id": f"s-{uuid.uuid4().hex}"})
    assert first.status_code == 200, first.text
    known_session, known_profile = first.json()["session"]["id"], first.json()["profile"]["id"]
    answers = [track() for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    wait_until_drained(api)  # async: the worker stored what the answers promised
    before = api.post("/profiles/search", json={"limit": 1}).json()["total"]
    _too_many(track(), "TESSERA_THROTTLE_NEW_PROFILES_PER_MINUTE")
    _too_many(track(profile={"id": f"p-{uuid.uuid4().hex}"}), "TESSERA_THROTTLE_NEW_PROFILES")
    _too_many(track(session={"id": f"s-{uuid.uuid4().hex}"}), "TESSERA_THROTTLE_NEW_PROFILES")
    wait_until_drained(api)
    assert api.post("/profiles/search", json={"limit": 1}).json()["total"] == before
    # Known visitors are not new: they go on, with the profile id they were answered (which
    # proves itself: the throttle reads nothing, pipeline/new_profiles.py).
    assert track(profile={"id": known_profile}).status_code == 200
    assert track(session={"id": known_session}, profile={"id": known_profile}).status_code == 200


def test_processes_sharing_redis_share_the_buckets(tmp_path: Path) -> None:
    with distributed_installation("throttle") as installation:
        env = {**installation.env, **LIMITS}
        password = uuid.uuid4().hex
        with (
            running_server(tmp_path / "a", env, admin_password=password) as first,
            running_server(tmp_path / "b", env, admin_password=password) as second,
        ):
            answers = [_sign_in(server.base_url, "wrong") for server in (first, second, first)]
            assert [a.status_code for a in answers] == [401, 401, 401]
            _too_many(_sign_in(second.base_url, password), "TESSERA_THROTTLE_LOGIN_PER_MINUTE")
