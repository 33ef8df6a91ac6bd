"""An async-mode installation as processes: one ``tessera serve`` (the API, running no queue
worker of its own) and N ``tessera worker`` processes, on one data folder, one Redis prefix
(locks and caches shared by the processes) and one queue topic. Any process can be SIGKILLed
and started again; the API keeps its port, so clients simply retry.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.redis_service import REDIS_HOST, REDIS_PORT
from tests.support.server import ADMIN_EMAIL, UNTHROTTLED, free_port, wait_for_health

START_TIMEOUT_S = 60.0


@dataclass
class AsyncCluster:
    data_dir: Path
    env: dict[str, str]
    workers: int
    port: int = field(default_factory=free_port)
    api: subprocess.Popen[bytes] | None = None
    worker_processes: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    kills: dict[str, int] = field(default_factory=lambda: {"api": 0, "worker": 0})
    _logs: list[Path] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TESSERA_", "INSTALLATION_TOKEN", "REDIS_", "KAFKA_", "PULSAR_"))
        }
        env.update(
            {
                "TESSERA_DATA_DIR": str(self.data_dir),
                "TESSERA_PORT": str(self.port),
                "TESSERA_ADMIN_EMAIL": ADMIN_EMAIL,
                "TESSERA_ADMIN_PASSWORD": self.admin_password,
                "TESSERA_INGEST_MODE": "async",
                "TESSERA_WORKERS": "0",
                # One API process (a distributed one would run one per CPU): killing "the API"
                # is a crash of the one process that took the requests.
                "TESSERA_API_WORKERS": "1",
                "REDIS_HOST": REDIS_HOST,
                "REDIS_PORT": str(REDIS_PORT),
                "LOGGING_LEVEL": "WARNING",
                **UNTHROTTLED,
            }
        )
        env.update(self.env)
        return env

    def _spawn(self, arguments: list[str], name: str) -> subprocess.Popen[bytes]:
        log_path = self.data_dir.parent / f"{name}-{len(self._logs)}.log"
        self._logs.append(log_path)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "tessera", *arguments],
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_api(self) -> None:
        self.api = self._spawn(["serve"], "api")
        if not wait_for_health(self.base_url, self.api, self.logs, START_TIMEOUT_S):
            raise RuntimeError(f"the API was not ready within {START_TIMEOUT_S} s:\n{self.logs()}")

    def start_worker(self, index: int) -> None:
        process = self._spawn(["worker", "--processes", "1"], f"worker{index}")
        while len(self.worker_processes) <= index:
            self.worker_processes.append(None)
        self.worker_processes[index] = process

    def start(self) -> None:
        self.start_api()
        for index in range(self.workers):
            self.start_worker(index)

    def kill_api(self) -> None:
        assert self.api is not None
        self.api.send_signal(signal.SIGKILL)
        self.api.wait(timeout=30)
        self.kills["api"] += 1

    def kill_worker(self, index: int) -> None:
        process = self.worker_processes[index]
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        self.kills["worker"] += 1

    def check_alive(self) -> None:
        """Every process still runs (none died by itself)."""
        assert self.api is not None and self.api.poll() is None, self.logs()
        for process in self.worker_processes:
            assert process is not None and process.poll() is None, self.logs()

    def token(self) -> str:
        answer = httpx.post(
            f"{self.base_url}/user/token",
            data={"username": ADMIN_EMAIL, "password": self.admin_password},
            timeout=30,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token()}"}, timeout=30
        )

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}"
            for path in self._logs
            if path.exists()
        )

    def stop(self) -> None:
        for process in [self.api, *self.worker_processes]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [self.api, *self.worker_processes]:
            if process is None:
                continue
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
