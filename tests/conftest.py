"""Fixtures shared by every test: a real server speaking HTTP, and its credentials."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fast_lane import FastLane
from tests.support.modes import SHARED_MODES, server_in_mode
from tests.support.server import RunningServer
from tests.support.sources import ServerSource, keyed, make_server_source


def pytest_configure(config: pytest.Config) -> None:
    # The fast lane (`pytest -m "not slow"`): marks the tests listed in tests/slow_tests.txt
    # and checks that the rest stay fast (tests/support/fast_lane.py).
    config.pluginmanager.register(FastLane(config), "tessera-fast-lane")


@pytest.fixture(scope="session", params=SHARED_MODES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server per mode (SHARED_MODES) for the tests that do not need a fresh one: every
    black-box suite built on it runs against both ways Tessera runs."""
    data_dir: Path = tmp_path_factory.mktemp(f"shared-{request.param}") / "data"
    with server_in_mode(request.param, data_dir) as running:
        yield running


@pytest.fixture(scope="session")
def token(server: RunningServer) -> str:
    return server.token()


@pytest.fixture(scope="session")
def api(server: RunningServer, token: str) -> httpx.Client:
    """A client signed in as the admin."""
    return server.client(token)


@pytest.fixture(scope="session")
def anonymous(server: RunningServer) -> httpx.Client:
    """A client with no credentials, as a website's tracker."""
    return server.client()


@pytest.fixture(scope="session")
def source_id(api: httpx.Client) -> str:
    answer = api.post("/event-source", json={"id": "test-web", "name": "Test website"})
    assert answer.status_code in (200, 201), answer.text
    return str(answer.json()["id"])


@pytest.fixture(scope="session")
def server_source(api: httpx.Client) -> ServerSource:
    """A server source (the operator's own system): full power, proven by its key."""
    return make_server_source(api, "Test backend", id="test-backend")


@pytest.fixture(scope="session")
def backend(server: RunningServer, server_source: ServerSource) -> httpx.Client:
    """A client of the operator's own system: sends the server source's key."""
    return keyed(server.client(), server_source)
