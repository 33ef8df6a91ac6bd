"""The data dir is its owner's alone: 0700, and every file Tessera makes in it 0600, also when
the folder was there before with wider permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx

from tests.support.server import running_server

# The embedded queue too, so that its log is among the files.
ASYNC_EMBEDDED = {"TESSERA_INGEST_MODE": "async", "TESSERA_QUEUE": "embedded"}
PASSWORD = "private-files-admin-password"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _track_one(base_url: str, api: httpx.Client) -> None:
    created = api.post("/event-source", json={"id": "private-files", "name": "Web"})
    assert created.status_code in (200, 201), created.text
    source_id = created.json()["id"]
    answer = httpx.post(
        f"{base_url}/track",
        json={"source": {"id": source_id}, "events": [{"type": "page-view"}]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def _modes(data_dir: Path) -> dict[str, str]:
    return {path.name: f"{_mode(path):04o}" for path in sorted(data_dir.iterdir())}


def test_the_data_dir_and_every_file_tessera_makes_in_it_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    old_umask = os.umask(0o022)  # what most systems have: files 0644 unless told otherwise
    try:
        with running_server(data_dir, ASYNC_EMBEDDED) as server:
            _track_one(server.base_url, server.client(server.token()))
            running = _modes(data_dir)  # with the write-ahead logs of the open databases
    finally:
        os.umask(old_umask)
    assert {"events.sqlite", "config.sqlite", "queue.db", "installation-token"} <= set(running)
    assert {"events.sqlite-wal", "events.sqlite-shm", "queue.db-wal"} <= set(running)
    assert _mode(data_dir) == 0o700
    for modes in (running, _modes(data_dir)):
        wider = {name: mode for name, mode in modes.items() if mode != "0600"}
        assert not wider, f"files open to others: {wider}"


def test_an_existing_open_data_dir_is_tightened_with_a_warning(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir, ASYNC_EMBEDDED, admin_password=PASSWORD) as server:
        _track_one(server.base_url, server.client(server.token()))
    # As an earlier version (or a hand-made folder) left it.
    os.chmod(data_dir, 0o755)
    for path in data_dir.iterdir():
        os.chmod(path, 0o644)
    with running_server(data_dir, ASYNC_EMBEDDED, admin_password=PASSWORD) as server:
        _track_one(server.base_url, server.client(server.token()))
        log = server.log()
    assert _mode(data_dir) == 0o700
    wider = {name: mode for name, mode in _modes(data_dir).items() if mode != "0600"}
    assert not wider, f"files open to others: {wider}"
    assert "was open to other accounts (was 0755)" in log
    assert "events.sqlite" in log and "installation-token" in log
