"""Starting the real ``tessera serve`` in a subprocess, as a user would, for black-box tests."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ADMIN_EMAIL = "admin@example.com"
# Tests are many clients behind one address: no throttling unless a test asks for it.
UNTHROTTLED = {
    "TESSERA_THROTTLE_LOGIN_PER_MINUTE": "0",
    "TESSERA_THROTTLE_INSTALL_PER_MINUTE": "0",
    "TESSERA_THROTTLE_NEW_PROFILES_PER_MINUTE": "0",
}
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    base_url: str
    data_dir: Path
    env: dict[str, str]
    admin_password: str
    log_path: Path
    _clients: list[httpx.Client] = field(default_factory=list)

    def make_searchable(self) -> None:
        """Searches see every acknowledged write from now on (an Elasticsearch installation
        refreshes at its own pace, see tests/support/elastic.make_searchable)."""
        if self.env.get("ELASTIC_HOST"):
            from tests.support.elastic import make_searchable

            make_searchable()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
        self._clients.append(client)
        return client

    def token(self) -> str:
        answer = httpx.post(
            f"{self.base_url}/user/token",
            data={"username": ADMIN_EMAIL, "password": self.admin_password},
            timeout=30,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        for client in self._clients:
            client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)


def start_server(
    data_dir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    admin_password: str | None = None,
    start_timeout_s: float = START_TIMEOUT_S,
) -> RunningServer:
    port = free_port()
    password = admin_password or secrets.token_urlsafe(18)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TESSERA_", "INSTALLATION_TOKEN", "API_DOCS"))
    }
    env.update(
        {
            "TESSERA_DATA_DIR": str(data_dir),
            "TESSERA_PORT": str(port),
            "TESSERA_ADMIN_EMAIL": ADMIN_EMAIL,
            "TESSERA_ADMIN_PASSWORD": password,
            "LOGGING_LEVEL": "WARNING",
            # One API process unless a test asks for more: the distributed mode's default
            # (one per CPU) would put every distributed test behind a supervisor, and a test
            # that kills "the server" (a crash) means one process.
            "TESSERA_API_WORKERS": "1",
            **UNTHROTTLED,
        }
    )
    env.update(extra_env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tessera", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(process, f"http://127.0.0.1:{port}", data_dir, env, password, log_path)
    wait_until_ready(server, start_timeout_s)
    return server


def wait_for_health(
    base_url: str, process: subprocess.Popen[bytes], log: Callable[[], str], timeout_s: float
) -> bool:
    """True once ``/health`` answers 200; False after ``timeout_s``; raises when the process
    exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited at start-up:\n{log()}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def wait_until_ready(server: RunningServer, timeout_s: float = START_TIMEOUT_S) -> None:
    if wait_for_health(server.base_url, server.process, server.log, timeout_s):
        return
    server.stop()
    raise RuntimeError(f"the server was not ready within {timeout_s} s:\n{server.log()}")


@contextmanager
def running_server(
    data_dir: Path, extra_env: dict[str, str] | None = None, *, admin_password: str | None = None
) -> Iterator[RunningServer]:
    server = start_server(data_dir, extra_env, admin_password=admin_password)
    try:
        yield server
    finally:
        server.stop()
