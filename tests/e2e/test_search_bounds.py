"""Searches are bounded (issue 12, "Denial of service"): a condition larger than
TESSERA_MAX_CONDITION_SIZE is refused with 422; a search that runs past
TESSERA_SEARCH_TIMEOUT_SECONDS is interrupted and answered 503 with Retry-After while the
server keeps serving; and SIGTERM stops the server even while a search runs.

The slow searches need many stored profiles: the embedded store is filled directly, by
copying one profile that /track made under many ids (what thousands of visitors would leave).
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.support.server import RunningServer, running_server, start_server

PROFILES = 40_000
# 540 comparisons, just under the language's 10,000 characters: about 9 s over PROFILES.
SLOW = " OR ".join(f"profile@a{i}>1" for i in range(540))


def _fill(data_dir: Path, copies: int) -> None:
    """``copies`` profiles like the one stored, as many visitors would leave."""
    with sqlite3.connect(data_dir / "events.sqlite") as connection:
        tenant, doc = connection.execute("SELECT tenant, doc FROM profiles LIMIT 1").fetchone()
        stored = msgspec.json.decode(doc)

        def rows() -> Iterator[tuple[str, str, float, str]]:
            for index in range(copies):
                stored["id"] = f"copy-{index}"
                stored["ids"] = [stored["id"]]
                yield tenant, stored["id"], float(index), msgspec.json.encode(stored).decode()

        connection.executemany("INSERT INTO profiles VALUES (?, ?, ?, ?)", rows())


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data dir holding PROFILES profiles, and its admin's password."""
    data_dir = tmp_path_factory.mktemp("search") / "data"
    password = uuid.uuid4().hex
    with running_server(data_dir, admin_password=password) as server:
        api = server.client(server.token())
        api.post("/event-source", json={"id": "web", "name": "Web"}).raise_for_status()
        traits = {f"t{i}": f"value {i}" for i in range(40)}
        server.client().post(
            "/track",
            json={
                "source": {"id": "web"},
                "events": [{"type": "identify", "properties": {"traits": traits}}],
            },
        ).raise_for_status()
    _fill(data_dir, PROFILES)
    return data_dir, password


def test_a_condition_past_the_size_bound_is_refused(
    server: RunningServer, api: httpx.Client
) -> None:
    # An OR of 250 ANDs: 500 comparisons, within the language's 10,000 characters.
    where = " OR ".join(f"(profile@a{i}>1 AND profile@b<2)" for i in range(250))
    for path in ("/profiles/search", "/events/search"):
        answer = api.post(path, json={"where": where.replace("profile@", path[1:-8] + "@")})
        assert answer.status_code == 422, answer.text
        assert "TESSERA_MAX_CONDITION_SIZE" in answer.json()["detail"]


def test_a_search_past_its_time_is_stopped_with_503(filled: tuple[Path, str]) -> None:
    data_dir, password = filled
    env = {"TESSERA_SEARCH_TIMEOUT_SECONDS": "1", "TESSERA_MAX_CONDITION_SIZE": "1000"}
    with running_server(data_dir, env, admin_password=password) as server:
        api = server.client(server.token())
        started = time.perf_counter()
        slow = api.post("/profiles/search", json={"where": SLOW})
        took = time.perf_counter() - started
        assert slow.status_code == 503, slow.text[:300]
        assert slow.headers["retry-after"]
        assert "TESSERA_SEARCH_TIMEOUT_SECONDS" in slow.json()["detail"]
        assert took < 2.5, took
        # The readers are free again: every one of them answers at once.
        for _ in range(8):
            started = time.perf_counter()
            quick = api.post("/profiles/search", json={"where": "profile@a0 > 1", "limit": 1})
            assert quick.status_code in (200, 503), quick.text
            assert time.perf_counter() - started < 2.0
        assert api.get("/health").status_code == 200


def test_sigterm_stops_the_server_while_a_search_runs(filled: tuple[Path, str]) -> None:
    data_dir, password = filled
    env = {
        "TESSERA_SEARCH_TIMEOUT_SECONDS": "600",
        "TESSERA_MAX_CONDITION_SIZE": "1000",
        "TESSERA_SHUTDOWN_GRACE_SECONDS": "1",
    }
    server = start_server(data_dir, env, admin_password=password)
    try:
        api = server.client(server.token())
        answers: list[object] = []

        def search() -> None:
            try:
                answers.append(api.post("/profiles/search", json={"where": SLOW}, timeout=120))
            except httpx.HTTPError as exc:
                answers.append(exc)

        searching = threading.Thread(target=search)
        searching.start()
        time.sleep(1.0)  # the search is running on a reader thread
        started = time.perf_counter()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        stopped = time.perf_counter() - started
        searching.join(timeout=30)
    finally:
        server.stop()
    # The grace second, then the search is cancelled and interrupted (it would run ~9 s).
    assert stopped < 4.0, f"stopped after {stopped:.1f} s\n{server.log()[-2000:]}"
    # uvicorn re-raises the signal once it has shut down: -15 is a clean stop on SIGTERM.
    assert server.process.returncode in (0, -signal.SIGTERM), server.log()[-2000:]
