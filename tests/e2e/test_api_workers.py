"""`tessera serve --workers N`, black box: several API processes on one socket in the
distributed mode (requests reach both, counters stay exact, SIGHUP replaces the processes one
at a time under continuous load without one failed request, SIGTERM stops every process), and
a clear refusal in the embedded mode, whose locks and caches live inside one process.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.cli import run_tessera
from tests.support.distributed import Installation, distributed_installation
from tests.support.server import RunningServer, start_server

PROCESSES = 2
# Starting a process imports everything and connects to three servers: slow on a busy box.
START_S = 180.0
# Attempts at one request answered 503 (a lock held too long) before the test gives up.
RETRIES = 20


def children_of(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def answering_processes(base_url: str, wanted: int, timeout_s: float = START_S) -> set[int]:
    """The process ids ``/health`` names, asked on fresh connections until ``wanted`` different
    ones answered."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < wanted and time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{base_url}/health", timeout=5)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        if answer.status_code == 200:
            seen.add(int(answer.json()["process"]))
        else:
            time.sleep(0.2)
    return seen


@pytest.fixture(scope="module")
def installation() -> Iterator[Installation]:
    with distributed_installation("api-workers") as made:
        yield made


def start_processes(installation: Installation, data_dir: Path) -> RunningServer:
    """`tessera serve` with PROCESSES API processes, once every one of them answers."""
    env = {**installation.env, "TESSERA_API_WORKERS": str(PROCESSES)}
    server = start_server(data_dir, env, start_timeout_s=START_S)
    # /health answers once the first process is ready; the test wants them all.
    if len(answering_processes(server.base_url, PROCESSES)) < PROCESSES:
        server.stop()
        raise AssertionError(f"not all {PROCESSES} API processes answered:\n{server.log()}")
    return server


@pytest.fixture(scope="module")
def served(
    installation: Installation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    server = start_processes(installation, tmp_path_factory.mktemp("api-workers") / "data")
    try:
        yield server
    finally:
        server.stop()


def test_requests_are_served_by_several_processes(served: RunningServer) -> None:
    answering = answering_processes(served.base_url, PROCESSES)
    print(f"/health answered by processes {sorted(answering)}")
    assert len(answering) == PROCESSES
    # They are the supervisor's own children, not processes left from elsewhere.
    assert answering <= children_of(served.process.pid)


def test_counters_stay_exact_across_processes(served: RunningServer) -> None:
    token = served.token()
    created = served.client(token).post("/event-source", json={"id": "spread", "name": "Spread"})
    assert created.status_code in (200, 201), created.text
    session = f"visit-{uuid.uuid4().hex[:8]}"
    body = {"source": {"id": "spread"}, "session": {"id": session}}
    first = httpx.post(f"{served.base_url}/track", json={**body, "events": [{"type": "view"}]})
    assert first.status_code == 200, first.text
    profile_id = first.json()["profile"]["id"]
    sent = 120
    retried = 0

    def send(_index: int) -> int:
        nonlocal retried
        # Its own event id: a request answered 503 (on this busy machine a profile can stay
        # locked past TESSERA_LOCK_WAIT_SECONDS) is sent again and still counts once.
        events = [{"type": "view", "id": uuid.uuid4().hex}]
        for _attempt in range(RETRIES):
            # A connection per request: the kernel hands each to whichever process accepts.
            answer = httpx.post(
                f"{served.base_url}/track",
                json={**body, "profile": {"id": profile_id}, "events": events},
                headers={"Connection": "close"},
                timeout=60,
            )
            if answer.status_code != 503:
                return answer.status_code
            retried += 1
            time.sleep(0.2)
        return answer.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, range(sent)))
    assert statuses == [200] * sent
    api = served.client(token)
    profile = api.get(f"/profile/{profile_id}").json()
    visit = api.get(f"/session/{session}").json()
    counted = profile["stats"]["events"]
    print(f"{sent + 1} events through {PROCESSES} processes ({retried} retries): {counted}")
    assert profile["stats"]["events"] == sent + 1
    assert visit["events"] == sent + 1


@dataclass
class Visitor:
    """One client that sends events on one keep-alive connection, back to back."""

    base_url: str
    source: str
    session: str = field(default_factory=lambda: f"load-{uuid.uuid4().hex[:10]}")
    answered: int = 0
    failures: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            while not stop.is_set():
                body = {
                    "source": {"id": self.source},
                    "session": {"id": self.session},
                    "events": [{"type": "view", "id": uuid.uuid4().hex}],
                }
                try:
                    answer = client.post("/track", json=body)
                except httpx.HTTPError as error:
                    self.failures.append(f"{type(error).__name__}: {error}")
                    continue
                if answer.status_code == 200:
                    self.answered += 1
                else:
                    self.failures.append(f"{answer.status_code}: {answer.text[:200]}")


def test_sighup_replaces_the_processes_without_failing_a_request(served: RunningServer) -> None:
    token = served.token()
    created = served.client(token).post("/event-source", json={"id": "steady", "name": "Steady"})
    assert created.status_code in (200, 201), created.text
    before = children_of(served.process.pid)
    old = answering_processes(served.base_url, PROCESSES)
    assert old <= before
    visitors = [Visitor(served.base_url, "steady") for _ in range(4)]
    stop = threading.Event()
    threads = [threading.Thread(target=visitor.run, args=(stop,)) for visitor in visitors]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        started = sum(visitor.answered for visitor in visitors)
        served.process.send_signal(signal.SIGHUP)
        # Done once both old processes have ended (each only after its replacement served).
        deadline = time.monotonic() + 2 * START_S
        while any(is_running(pid) for pid in old) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(is_running(pid) for pid in old), served.log()
        time.sleep(1.0)  # and the new ones keep serving
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    failures = [failure for visitor in visitors for failure in visitor.failures]
    answered = sum(visitor.answered for visitor in visitors)
    new = answering_processes(served.base_url, PROCESSES)
    print(
        f"SIGHUP under load: {answered} requests answered ({started} before the signal), "
        f"{len(failures)} failed; processes {sorted(old)} -> {sorted(new)}"
    )
    assert not failures, failures[:5]
    assert answered > started
    assert len(new) == PROCESSES and not new & old
    assert new <= children_of(served.process.pid)
    # Every answered request was stored once, whichever process took it.
    api = served.client(token)
    for visitor in visitors:
        assert api.get(f"/session/{visitor.session}").json()["events"] == visitor.answered


def test_sigterm_stops_every_process(served: RunningServer) -> None:
    processes = children_of(served.process.pid)
    assert len(processes) >= PROCESSES
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=120) == 0, served.log()
    deadline = time.monotonic() + 10
    while any(is_running(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in processes if is_running(pid)]
    assert not left, f"processes left running: {left}\n{served.log()}"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", _port(served)), 1):
        pass


def test_api_processes_end_with_a_killed_supervisor(
    installation: Installation, tmp_path: Path
) -> None:
    server = start_processes(installation, tmp_path / "data")
    processes = children_of(server.process.pid)
    assert len(processes) >= PROCESSES
    server.kill()  # SIGKILL: the supervisor can pass nothing on
    deadline = time.monotonic() + 60
    while any(is_running(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in processes if is_running(pid)]
    assert not left, f"processes left running without their supervisor: {left}\n{server.log()}"


def _port(server: RunningServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def test_several_processes_are_refused_in_the_embedded_mode(tmp_path: Path) -> None:
    result = run_tessera(
        {"TESSERA_DATA_DIR": str(tmp_path / "data"), "REDIS_HOST": "127.0.0.1"},
        "serve",
        "--workers",
        "2",
        not_inherited=("TESSERA_", "ELASTIC_", "MYSQL_", "REDIS_"),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "TESSERA_API_WORKERS (or --workers) is 2" in output
    # It names what is missing, and not what is set.
    assert "ELASTIC_HOST and MYSQL_HOST are not set" in output
    assert "REDIS_HOST (" not in output
    assert not (tmp_path / "data").exists()  # refused before anything was created
