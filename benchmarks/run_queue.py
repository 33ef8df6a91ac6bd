"""Async intake and drain rate of Tessera per ingest queue backend (issue 6).

For each backend in ``--backends`` (embedded SQLite log, Redis Streams, Kafka, Pulsar), side by
side in one run, on a fresh server, data dir, topic and Redis prefix each time:

1. intake: ``tessera serve`` with ``TESSERA_INGEST_MODE=async`` and ``TESSERA_WORKERS=0``, so
   nothing drains, takes ``--requests`` requests of ``--events`` events from the Go load
   generator (closed loop, ``--connections`` keep-alive connections). A 200 is sent only once
   the queue acknowledged the message, so 200 answers per second are acknowledgements per
   second. Afterwards the queue's backlog must equal the acknowledged requests.
2. drain: ``tessera worker --processes 1``, once per process in ``--drain-processes``, started
   against that backlog; measured from their start until ``GET /queue/status`` says the backlog
   is 0: messages/s and events/s, start-up included, and again from the first drained message.

Before both, the same load against a server in sync mode (the pipeline runs in the request) is
the baseline. Records are stored in SQLite in every case (the queue backend is the variable);
``REDIS_HOST`` is set for every server and worker, so locks and caches are in Redis, shared by
the processes when two workers run.

    python benchmarks/run_queue.py [--backends embedded,redis,kafka,pulsar] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import distributed_services
import run_core as core
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = core.console
BENCH_DIR = core.BENCH_DIR
RESULTS_FILE = BENCH_DIR / "RESULTS.md"
BACKENDS = ("embedded", "redis", "kafka", "pulsar")
KAFKA_BOOTSTRAP = "127.0.0.1:9092"
PULSAR_URL = "pulsar://127.0.0.1:6650"
PULSAR_ADMIN_URL = "http://127.0.0.1:8080"
PULSAR_NAMESPACE = "public/default"
# The settings every run states explicitly, so the recorded figures say what they were.
FIXED_SETTINGS = {
    "TESSERA_WRITER_BATCH_SIZE": "500",
    "TESSERA_WORKER_FETCH": "500",
    "TESSERA_WORKER_CONCURRENCY": "64",
    "TESSERA_QUEUE_PARTITIONS": "8",
}
# Caller variables that would point a server somewhere else than this run means it to go.
FOREIGN_PREFIXES = ("TESSERA_", "REDIS_", "KAFKA_", "PULSAR_", "ELASTIC_", "MYSQL_")
POLL_S = 0.25
# Brokers report the backlog from offsets/cursors that may trail the acknowledgements a little.
BACKLOG_SETTLE_S = 20.0
# Workers write their counters every 2 s; a few beats are enough to see the final ones.
BEAT_WAIT_S = 8.0
STATUS_TIMEOUT_S = 15.0
START_TIMEOUT_S = 60.0


class BackendUnavailable(core.BenchError):
    """A broker the run needs does not answer; its cells are skipped, the others still run."""


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class Intake:
    loadgen: dict[str, Any]
    warmup_ok: int
    wall_s: float
    server_cpu_s: float
    services_cpu_s: dict[str, float]
    # Async only: what the queue held afterwards against what the API acknowledged.
    backlog_expected: int | None = None
    backlog_seen: int | None = None
    backlog_settle_s: float | None = None

    @property
    def backlog_ok(self) -> bool:
        return self.backlog_expected is not None and self.backlog_seen == self.backlog_expected

    @property
    def requests_per_s(self) -> float:
        return float(self.loadgen["ok_requests_per_s"])

    @property
    def events_per_s(self) -> float:
        return float(self.loadgen["ok_events_per_s"])

    @property
    def errors(self) -> int:
        return sum(int(n) for n in self.loadgen["errors"].values())

    def server_cpu_us_per_request(self) -> float:
        sent = int(self.loadgen["total_sent"])
        return 1e6 * self.server_cpu_s / sent if sent else 0.0


@dataclasses.dataclass
class Drain:
    processes: int
    messages: int  # the backlog when the workers started
    events_per_message: int
    finished: bool
    backlog_left: int
    seconds: float  # from starting the worker processes to the first poll that saw backlog 0
    first_progress_s: float | None  # ... to the first poll that saw the backlog shrink
    backlog_at_first_progress: int | None
    polls: int
    worker_cpu_s: float
    services_cpu_s: dict[str, float]
    worker_messages: int | None = None  # what the workers' own counters said, summed
    worker_events: int | None = None
    worker_dead_letters: int | None = None
    dead_letters: int | None = None  # GET /queue/status, for the whole installation

    @property
    def drained(self) -> int:
        return self.messages - self.backlog_left

    @property
    def messages_per_s(self) -> float:
        return self.drained / self.seconds if self.seconds > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.messages_per_s * self.events_per_message

    @property
    def steady_messages_per_s(self) -> float | None:
        """From the first poll that saw progress to backlog 0: the rate without start-up."""
        if self.first_progress_s is None or self.backlog_at_first_progress is None:
            return None
        span = self.seconds - self.first_progress_s
        done = self.backlog_at_first_progress - self.backlog_left
        return done / span if span > 0 and done > 0 else None

    def worker_cpu_us_per_event(self) -> float:
        events = self.drained * self.events_per_message
        return 1e6 * self.worker_cpu_s / events if events else 0.0


@dataclasses.dataclass
class Cell:
    """One fresh server: the sync baseline, or one backend's intake and drain."""

    mode: str  # "sync" or "async"
    backend: str  # "-" in sync mode
    drain_processes: int  # 0 in sync mode
    intake: Intake | None = None
    drain: Drain | None = None
    skipped: str | None = None

    @property
    def name(self) -> str:
        if self.mode == "sync":
            return "sync (baseline)"
        return f"{self.backend}, {self.drain_processes} proc"


# --------------------------------------------------------------------------- arguments


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from exc
    if not values or any(not 1 <= v <= 8 for v in values):
        raise argparse.ArgumentTypeError("want numbers within 1..8, e.g. 1,2")
    return values


def _backend_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {unknown}; of {', '.join(BACKENDS)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--backends", type=_backend_list, default=list(BACKENDS), help="comma list")
    p.add_argument(
        "--drain-processes",
        type=_int_list,
        default=[1, 2],
        help="worker processes per drain; each count is a fresh intake and drain per backend",
    )
    p.add_argument("--requests", type=int, default=4000, help="measured requests per intake")
    p.add_argument("--events", type=int, default=10, help="events per request")
    p.add_argument("--warmup-requests", type=int, default=400, help="unmeasured, before each")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    p.add_argument("--known", type=int, default=500, help="known visitors to seed per server")
    p.add_argument("--known-ratio", type=float, default=0.5, help="share of known visitors")
    p.add_argument("--no-sync", action="store_true", help="skip the sync-mode baseline")
    p.add_argument("--intake-timeout", type=float, default=120.0, help="seconds, per intake")
    p.add_argument("--drain-timeout", type=float, default=180.0, help="seconds, per drain")
    p.add_argument("--redis-host", default="127.0.0.1")
    p.add_argument("--redis-port", type=int, default=6379)
    p.add_argument(
        "--record", action="store_true", help="append a section to benchmarks/RESULTS.md"
    )
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 1_000_000 or not 1 <= args.events <= 100:
        p.error("--requests must be within 1..1000000 and --events within 1..100")
    if not 0 <= args.warmup_requests <= 100_000 or not 0 <= args.known <= 100_000:
        p.error("--warmup-requests and --known must be within 0..100000")
    if not 1 <= args.connections <= 1024 or not 0.0 <= args.known_ratio <= 1.0:
        p.error("--connections must be within 1..1024 and --known-ratio within 0..1")
    if not 5 <= args.intake_timeout <= 3600 or not 5 <= args.drain_timeout <= 3600:
        p.error("--intake-timeout and --drain-timeout must be within 5..3600 s")
    return args


# --------------------------------------------------------------------------- the run's place


def pulsar_token() -> str:
    """The development broker's super-user token (written by scripts/pulsar); never printed."""
    cache = os.environ.get("TESSERA_SERVICES_CACHE") or str(Path.home() / ".cache/tessera-services")
    path = Path(cache) / "pulsar" / "auth" / "admin.token"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BackendUnavailable(f"no Pulsar admin token at {path} ({exc.strerror})") from exc
    if not token:
        raise BackendUnavailable(f"the Pulsar admin token file {path} is empty")
    return token


@dataclasses.dataclass(frozen=True)
class Place:
    """One cell's topic and Redis prefix (named after one random tag) and how to remove them."""

    backend: str
    redis_host: str
    redis_port: int
    tag: str = dataclasses.field(default_factory=lambda: secrets.token_hex(4))
    pulsar_token: str = dataclasses.field(default="", repr=False)

    @property
    def topic(self) -> str:
        return f"tessera-bench-{self.tag}"

    @property
    def prefix(self) -> str:
        return f"{distributed_services.KEY_PREFIX}queue-{self.tag}"

    def env(self, mode: str) -> dict[str, str]:
        env = {
            **FIXED_SETTINGS,
            "TESSERA_INGEST_MODE": mode,
            "TESSERA_WORKERS": "0",
            "REDIS_HOST": self.redis_host,
            "REDIS_PORT": str(self.redis_port),
            "TESSERA_REDIS_PREFIX": self.prefix,
        }
        if mode == "sync":
            return env
        env.update(TESSERA_QUEUE=self.backend, TESSERA_QUEUE_TOPIC=self.topic)
        if self.backend == "kafka":
            env["KAFKA_BOOTSTRAP_SERVERS"] = KAFKA_BOOTSTRAP
        elif self.backend == "pulsar":
            env.update(
                PULSAR_HOST=PULSAR_URL,
                PULSAR_ADMIN_URL=PULSAR_ADMIN_URL,
                PULSAR_NAMESPACE=PULSAR_NAMESPACE,
                PULSAR_AUTH_TOKEN=self.pulsar_token,
            )
        return env

    def clean(self) -> list[str]:
        """Remove the topic and the Redis keys; what could not be removed (the embedded queue
        lives in the data dir, which goes with it)."""
        problems = []
        steps: list[tuple[str, Callable[[], None]]] = [("Redis keys", self._drop_keys)]
        if self.backend == "kafka":
            steps.append(("Kafka topic", self._drop_kafka_topic))
        elif self.backend == "pulsar":
            steps.append(("Pulsar topic", self._drop_pulsar_topic))
        for what, step in steps:
            try:
                step()
            except Exception as error:  # noqa: BLE001 - report every leftover, stop at none
                problems.append(f"{what}: {type(error).__name__}: {error}"[:300])
        return problems

    def _drop_keys(self) -> None:
        distributed_services.drop_redis_keys(self.redis_host, self.redis_port, self.prefix)

    def _drop_kafka_topic(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

        async def drop() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP, request_timeout_ms=10000)
            await admin.start()
            try:
                # The group's committed offsets on the topic go with it; the empty group
                # expires on its own (aiokafka has no call to delete a group).
                await admin.delete_topics([self.topic])
            finally:
                await admin.close()

        asyncio.run(asyncio.wait_for(drop(), timeout=30))

    def _drop_pulsar_topic(self) -> None:
        path = f"/admin/v2/persistent/{PULSAR_NAMESPACE}/{urllib.parse.quote(self.topic)}"
        # force: also drops the workers' subscription and anything still connected.
        status, data = core.http_json(
            "DELETE",
            f"{PULSAR_ADMIN_URL}{path}/partitions?force=true",
            headers={"Authorization": f"Bearer {self.pulsar_token}"},
            timeout=30.0,
        )
        if status not in (204, 404):
            raise core.BenchError(f"DELETE answered {status}: {data!r:.200}")


def check_backend(backend: str, opts: argparse.Namespace) -> str:
    """The Pulsar token for the pulsar backend ("" otherwise); BackendUnavailable when the
    broker does not answer, so its cells are skipped rather than the whole run lost."""
    if backend == "kafka":
        _check_port(KAFKA_BOOTSTRAP)
    if backend == "pulsar":
        token = pulsar_token()
        try:
            status, _ = core.http_json(
                "GET",
                f"{PULSAR_ADMIN_URL}/admin/v2/brokers/health",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10.0,
            )
        except OSError as exc:
            raise BackendUnavailable(f"Pulsar admin API unreachable: {exc}") from exc
        if status != 200:
            raise BackendUnavailable(f"Pulsar health check answered {status}")
        return token
    _check_port(f"{opts.redis_host}:{opts.redis_port}")
    return ""


def _check_port(address: str) -> None:
    import socket

    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return
    except OSError as exc:
        raise BackendUnavailable(f"nothing answers at {address}: {exc}") from exc


# --------------------------------------------------------------------------- processes


def child_env(workdir: Path, password: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
    env.pop("INSTALLATION_TOKEN", None)
    env.update(
        TESSERA_DATA_DIR=str(workdir / "data"),
        TESSERA_ADMIN_EMAIL=core.ADMIN_EMAIL,
        TESSERA_ADMIN_PASSWORD=password,
        TESSERA_HOST="127.0.0.1",
        LOGGING_LEVEL="WARNING",
        # One API process in every mode (a distributed server would run one per CPU), so runs
        # compare with each other and with earlier ones.
        TESSERA_API_WORKERS="1",
        # The Pulsar admin client honours proxy variables; these addresses never need one.
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


def spawn(cmd: list[str], workdir: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        # Own session: Ctrl-C reaches only this runner, which stops each group it started.
        return subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def log_tail(path: Path, lines: int = 25) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def processes_stopped(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            core.stop_server(proc)


def tessera_exe() -> str:
    exe = shutil.which("tessera") or str(Path(sys.executable).with_name("tessera"))
    if not Path(exe).is_file():
        raise core.BenchError("`tessera` is not installed; run `pip install -e .` first")
    return exe


# --------------------------------------------------------------------------- queue status


def queue_status(base: str, token: str) -> dict[str, Any]:
    status, data = core.http_json(
        "GET",
        f"{base}/queue/status",
        headers={"Authorization": f"Bearer {token}"},
        timeout=STATUS_TIMEOUT_S,
    )
    if status != 200 or not isinstance(data, dict) or not isinstance(data.get("queue"), dict):
        raise core.BenchError(f"GET /queue/status answered {status}: {data!r:.300}")
    return data


def backlog_of(status: dict[str, Any]) -> int:
    return int(status["queue"]["backlog"])


def settle_backlog(base: str, token: str, expected: int) -> tuple[int, float]:
    """The backlog once it equals ``expected``, or the last one seen when it does not within
    BACKLOG_SETTLE_S; and how long the wait took."""
    start = time.monotonic()
    seen = backlog_of(queue_status(base, token))
    while seen != expected and time.monotonic() - start < BACKLOG_SETTLE_S:
        time.sleep(POLL_S)
        seen = backlog_of(queue_status(base, token))
    return seen, time.monotonic() - start


# --------------------------------------------------------------------------- intake


def loadgen_args(
    opts: argparse.Namespace, base: str, known: Path | None, requests: int
) -> list[str]:
    args = [
        f"-url={base}",
        f"-source={core.SOURCE_ID}",
        # A hard bound only: the run ends after exactly `requests` requests well before it.
        f"-duration={opts.intake_timeout}s",
        "-warmup=0s",
        f"-max-requests={requests}",
        f"-connections={opts.connections}",
        f"-events={opts.events}",
        "-rate=0",
        f"-seed={secrets.randbits(48) + 1}",
        "-timeout=30s",
    ]
    if known is not None and opts.known_ratio > 0:
        args += [f"-known={known}", f"-known-ratio={opts.known_ratio}"]
    else:
        args.append("-known-ratio=0")
    return args


def run_intake(
    opts: argparse.Namespace,
    binary: Path,
    base: str,
    server: subprocess.Popen[bytes],
    known: Path | None,
    service_pids: dict[str, int],
) -> Intake:
    warmup_ok = 0
    bound = opts.intake_timeout + 30
    if opts.warmup_requests:
        with console.status(f"warm-up: {opts.warmup_requests:,} requests (not measured)"):
            warm = core.run_loadgen(
                binary, loadgen_args(opts, base, known, opts.warmup_requests), bound
            )
        warmup_ok = int(warm["ok"])
    services_before = distributed_services.services_cpu_s(service_pids)
    cpu_before, t0 = core.cpu_seconds(server.pid), time.monotonic()
    with console.status(
        f"intake: {opts.requests:,} requests of {opts.events} events, "
        f"{opts.connections} connections"
    ):
        lg = core.run_loadgen(binary, loadgen_args(opts, base, known, opts.requests), bound)
    wall = time.monotonic() - t0
    server_cpu = core.cpu_seconds(server.pid) - cpu_before
    services_after = distributed_services.services_cpu_s(service_pids)
    if lg.get("stopped_by") == "interrupt":
        raise KeyboardInterrupt
    if server.poll() is not None:
        raise core.BenchError(f"the server exited with code {server.returncode} during intake")
    return Intake(
        loadgen=lg,
        warmup_ok=warmup_ok,
        wall_s=round(wall, 3),
        server_cpu_s=round(server_cpu, 3),
        services_cpu_s=_cpu_spent(services_before, services_after),
    )


def _cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - cpu, 3) for name, cpu in before.items() if name in after}


# --------------------------------------------------------------------------- drain


def live_beats(status: dict[str, Any], pids: set[int]) -> list[dict[str, Any]]:
    """This drain's workers only: an earlier worker's beat stays listed for a few seconds."""
    return [w for w in status.get("workers") or [] if int(w.get("pid") or 0) in pids]


def run_drain(
    *,
    base: str,
    token: str,
    workdir: Path,
    env: dict[str, str],
    processes: int,
    expected: int,
    events_per_message: int,
    timeout_s: float,
    service_pids: dict[str, int],
    label: str,
) -> Drain:
    """Start ``processes`` worker processes, poll the backlog down to 0, stop them."""
    cmd = [tessera_exe(), "worker", "--processes", "1"]
    services_before = distributed_services.services_cpu_s(service_pids)
    t0 = time.monotonic()
    logs = [workdir / f"worker-{label}-{n}.log" for n in range(processes)]
    procs = [spawn(cmd, workdir, env, log) for log in logs]
    samples: list[tuple[float, int]] = []
    with processes_stopped(procs):
        backlog = expected
        progress = Progress(
            TextColumn(f"drain ({label}, {processes} process{'es' * (processes > 1)})"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("messages"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        with progress:
            bar = progress.add_task("drain", total=max(expected, 1))
            while time.monotonic() - t0 < timeout_s:
                for proc, log in zip(procs, logs, strict=True):
                    if proc.poll() is not None:
                        raise core.BenchError(
                            f"a worker exited with code {proc.returncode} while draining:\n"
                            f"{log_tail(log)}"
                        )
                asked = time.monotonic()
                backlog = backlog_of(queue_status(base, token))
                # The answer describes some moment during the request: take its middle.
                samples.append(((asked + time.monotonic()) / 2 - t0, backlog))
                progress.update(bar, completed=max(0, expected - backlog))
                if backlog == 0:
                    break
                time.sleep(POLL_S)
        seconds = samples[-1][0] if samples else time.monotonic() - t0
        worker_cpu = sum(core.cpu_seconds(proc.pid) for proc in procs)
        services_after = distributed_services.services_cpu_s(service_pids)
        first = next(((t, b) for t, b in samples if b < expected), None)
        drain = Drain(
            processes=processes,
            messages=expected,
            events_per_message=events_per_message,
            finished=backlog == 0,
            backlog_left=backlog,
            seconds=round(seconds, 3),
            first_progress_s=round(first[0], 3) if first else None,
            backlog_at_first_progress=first[1] if first else None,
            polls=len(samples),
            worker_cpu_s=round(worker_cpu, 3),
            services_cpu_s=_cpu_spent(services_before, services_after),
        )
        read_worker_counters(base, token, {proc.pid for proc in procs}, drain)
    return drain


def read_worker_counters(base: str, token: str, pids: set[int], drain: Drain) -> None:
    """The workers' own counters (written every 2 s), once they add up to what was drained."""
    deadline = time.monotonic() + BEAT_WAIT_S
    while True:
        status = queue_status(base, token)
        beats = live_beats(status, pids)
        messages = sum(int(w["messages"]) for w in beats)
        if messages >= drain.drained or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    drain.worker_messages = messages
    drain.worker_events = sum(int(w["events"]) for w in beats)
    drain.worker_dead_letters = sum(int(w["dead_letters"]) for w in beats)
    drain.dead_letters = int(status.get("dead_letters") or 0)


# --------------------------------------------------------------------------- one cell


def run_cell(
    cell: Cell, opts: argparse.Namespace, binary: Path, service_pids: dict[str, int]
) -> None:
    console.rule(f"[bold]{cell.name}[/bold]")
    token_for_pulsar = check_backend(cell.backend, opts) if cell.mode == "async" else ""
    if cell.mode == "sync":
        _check_port(f"{opts.redis_host}:{opts.redis_port}")
    place = Place(cell.backend, opts.redis_host, opts.redis_port, pulsar_token=token_for_pulsar)
    workdir = Path(tempfile.mkdtemp(prefix="tessera-bench-queue-"))
    password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
    env = child_env(workdir, password, place.env(cell.mode))
    port = core.free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = workdir / "server.log"
    try:
        server = spawn([tessera_exe(), "serve", "--port", str(port)], workdir, env, server_log)
        with processes_stopped([server]):
            try:
                _run_cell_on(cell, opts, binary, service_pids, server, base, password, env)
            except core.BenchError:
                tail = log_tail(server_log)
                if tail:
                    console.print("[dim]last lines of the server log:[/dim]")
                    console.print(tail, markup=False, highlight=False)
                raise
    finally:
        problems = place.clean()
        for problem in problems:
            console.print(f"[yellow]left behind ({place.topic}): {problem}[/yellow]")
        shutil.rmtree(workdir, ignore_errors=True)


def _run_cell_on(
    cell: Cell,
    opts: argparse.Namespace,
    binary: Path,
    service_pids: dict[str, int],
    server: subprocess.Popen[bytes],
    base: str,
    password: str,
    env: dict[str, str],
) -> None:
    workdir = Path(env["TESSERA_DATA_DIR"]).parent
    core.wait_healthy(base, server)
    token = core.get_token(base, password)
    core.create_source(base, token)
    drain_args: dict[str, Any] = {
        "base": base,
        "token": token,
        "workdir": workdir,
        "env": env,
        "service_pids": service_pids,
    }
    known: Path | None = None
    if opts.known > 0:
        known = workdir / "known.tsv"
        with console.status(f"seeding {opts.known:,} known visitors"):
            core.seed_known(int(base.rsplit(":", 1)[1]), opts.known, known)
        if cell.mode == "async":
            # Stored before the intake, as known visitors are; not measured.
            seeded = run_drain(
                processes=1,
                expected=opts.known,
                events_per_message=1,
                timeout_s=opts.drain_timeout,
                label="seed",
                **drain_args,
            )
            if not seeded.finished:
                raise core.BenchError(
                    f"the seed visitors were not drained in {opts.drain_timeout:.0f} s "
                    f"({seeded.backlog_left} left)"
                )
    intake = run_intake(opts, binary, base, server, known, service_pids)
    cell.intake = intake
    console.print(f"  intake: {describe_intake(intake)}", highlight=False)
    if cell.mode == "sync":
        return
    expected = intake.warmup_ok + int(intake.loadgen["ok"])
    seen, waited = settle_backlog(base, token, expected)
    intake.backlog_expected, intake.backlog_seen = expected, seen
    intake.backlog_settle_s = round(waited, 2)
    console.print(
        f"  backlog {seen:,} after {waited:.1f} s, acknowledged {expected:,} "
        f"({'equal' if seen == expected else 'NOT EQUAL'})",
        highlight=False,
    )
    cell.drain = run_drain(
        processes=cell.drain_processes,
        expected=seen,
        events_per_message=opts.events,
        timeout_s=opts.drain_timeout,
        label="measured",
        **drain_args,
    )
    console.print(f"  drain: {describe_drain(cell.drain)}", highlight=False)


# --------------------------------------------------------------------------- reporting

QUEUE_SERVICE = {"redis": "redis", "kafka": "kafka", "pulsar": "pulsar"}


def describe_intake(intake: Intake) -> str:
    lat = intake.loadgen["latency_ms"]
    return (
        f"{intake.requests_per_s:,.0f} req/s, {intake.events_per_s:,.0f} events/s, "
        f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, {intake.errors} errors, "
        f"{intake.loadgen['ok']:,} ok in {intake.loadgen['seconds']:.1f} s "
        f"(stopped by {intake.loadgen['stopped_by']}), "
        f"server CPU {intake.server_cpu_us_per_request():.0f} µs/request"
    )


def describe_drain(drain: Drain) -> str:
    steady = drain.steady_messages_per_s
    first = drain.first_progress_s
    return (
        f"{drain.drained:,} of {drain.messages:,} messages in {drain.seconds:.1f} s "
        f"({'backlog 0' if drain.finished else f'TIMED OUT, {drain.backlog_left:,} left'}): "
        f"{drain.messages_per_s:,.0f} messages/s, {drain.events_per_s:,.0f} events/s; "
        f"first drop after {'-' if first is None else f'{first:.1f}'} s, "
        f"from then {'-' if steady is None else f'{steady:,.0f}'} messages/s; "
        f"workers counted {drain.worker_messages} messages, {drain.worker_events} events, "
        f"{drain.worker_dead_letters} dead letters; worker CPU "
        f"{drain.worker_cpu_us_per_event():.0f} µs/event"
    )


def broker_us_per_request(cell: Cell) -> float | None:
    service = QUEUE_SERVICE.get(cell.backend)
    intake = cell.intake
    if service is None or intake is None or service not in intake.services_cpu_s:
        return None
    sent = int(intake.loadgen["total_sent"])
    return 1e6 * intake.services_cpu_s[service] / sent if sent else None


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(cells: list[Cell], opts: argparse.Namespace) -> Table:
    table = Table(
        title=f"Async intake and drain per queue backend, {os.cpu_count()} CPUs shared with "
        "the load generator and the brokers",
        caption=f"{opts.requests:,} requests of {opts.events} events per intake, "
        f"{opts.connections} connections, closed loop; req/s: 200 answers per second; "
        "drain: worker start to backlog 0; steady: from the first drained message",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("server", no_wrap=True)
    for col in ("req/s", "ev/s", "p50", "p99", "err", "backlog", "drain s", "msg/s", "ev/s"):
        table.add_column(col, justify="right")
    table.add_column("steady", justify="right")
    for cell in cells:
        if cell.skipped is not None or cell.intake is None:
            table.add_row(cell.name, f"[yellow]skipped: {cell.skipped}[/yellow]")
            continue
        intake, drain = cell.intake, cell.drain
        lat = intake.loadgen["latency_ms"]
        backlog = "-"
        if intake.backlog_expected is not None:
            backlog = "= acks" if intake.backlog_ok else f"[red]{intake.backlog_seen:,}[/red]"
        row = [
            cell.name,
            f"{intake.requests_per_s:,.0f}",
            f"{intake.events_per_s:,.0f}",
            f"{lat['p50']:.1f}",
            f"{lat['p99']:.1f}",
            f"[red]{intake.errors}[/red]" if intake.errors else "0",
            backlog,
        ]
        if drain is None:
            row += ["in req.", "-", "-", "-"]
        else:
            row += [
                f"{drain.seconds:.1f}" if drain.finished else f"[red]>{drain.seconds:.0f}[/red]",
                f"{drain.messages_per_s:,.0f}",
                f"{drain.events_per_s:,.0f}",
                _num(drain.steady_messages_per_s),
            ]
        table.add_row(*row)
    return table


def git_dirty() -> bool | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if proc.returncode == 0:
            return bool(proc.stdout.strip())
    return None


def markdown_section(
    cells: list[Cell], opts: argparse.Namespace, started: datetime, load: str, argv: list[str]
) -> str:
    rev, dirty = core.git_revision(), git_dirty()
    tree = {True: "with uncommitted changes in the tree", False: "clean tree", None: "tree ?"}
    settings = ", ".join(f"`{k}={v}`" for k, v in FIXED_SETTINGS.items())
    command = " ".join(["python benchmarks/run_queue.py", *argv])
    head = (
        "## Async intake and drain per queue backend (issue 6)\n\n"
        f"Run {started.strftime('%Y-%m-%d %H:%M')} UTC, commit {rev} ({tree[dirty]}), "
        f"{os.cpu_count()} cores shared by the server, the workers, the Go load generator and "
        "the brokers (Redis, Kafka and Pulsar run on the same machine, as do MariaDB and "
        "Elasticsearch, which this run does not use but other programs may); load average "
        f"at the start {load}, at the end {load_average()}. `{command}`.\n\n"
        f"Each row is a fresh server (data dir, topic, Redis prefix). Intake: "
        f"{opts.warmup_requests:,} unmeasured requests, then {opts.requests:,} requests of "
        f"{opts.events} events, closed loop over {opts.connections} keep-alive connections, "
        f"{opts.known_ratio:.0%} of them from {opts.known:,} known visitors (seeded, and in "
        "async mode drained, before). Async servers run no worker (`TESSERA_WORKERS=0`), so "
        "a 200 is a queue acknowledgement and nothing drains meanwhile; afterwards the "
        "backlog in `GET /queue/status` was compared with the acknowledged requests. Drain: "
        "that many `tessera worker --processes 1` processes started against the backlog; "
        "*drain s* runs from starting them (Python start-up, consumer join included) to the "
        f"first poll (every {POLL_S} s) that saw backlog 0, *steady* from the first poll "
        "that saw the backlog shrink. Records in SQLite in every row; `REDIS_HOST` set for "
        "every server and worker (locks and caches in Redis, shared by two workers). "
        f"Settings: {settings}.\n\n"
    )
    rows = [
        "| server | req/s | events/s | p50 ms | p99 ms | errors | backlog = acks "
        "| server CPU µs/req | broker CPU µs/req | worker processes | drain s | messages/s "
        "| events/s | first drained after s | steady messages/s | worker CPU µs/event "
        "| messages the workers counted | dead letters |\n",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    ]
    for cell in cells:
        if cell.skipped is not None or cell.intake is None:
            rows.append(f"| {cell.name} | skipped: {cell.skipped} |" + " |" * 16 + "\n")
            continue
        intake, drain = cell.intake, cell.drain
        lat = intake.loadgen["latency_ms"]
        if intake.backlog_expected is None:
            backlog = "-"
        elif intake.backlog_ok:
            backlog = f"yes ({intake.backlog_seen:,})"
        else:
            backlog = f"**no**: {intake.backlog_seen:,} for {intake.backlog_expected:,}"
        cells_md = [
            cell.name if cell.mode == "sync" else cell.backend,
            f"{intake.requests_per_s:,.0f}",
            f"{intake.events_per_s:,.0f}",
            f"{lat['p50']:.2f}",
            f"{lat['p99']:.2f}",
            str(intake.errors),
            backlog,
            f"{intake.server_cpu_us_per_request():.0f}",
            _num(broker_us_per_request(cell)),
        ]
        if drain is None:
            cells_md += ["-", "in the request", "-", "-", "-", "-", "-", "-", "-"]
        else:
            seconds = f"{drain.seconds:.1f}" if drain.finished else f"**> {drain.seconds:.0f}**"
            cells_md += [
                str(drain.processes),
                seconds,
                f"{drain.messages_per_s:,.0f}",
                f"{drain.events_per_s:,.0f}",
                _num(drain.first_progress_s, 1),
                _num(drain.steady_messages_per_s),
                f"{drain.worker_cpu_us_per_event():.0f}",
                _num(drain.worker_messages),
                str(drain.dead_letters),
            ]
        rows.append("| " + " | ".join(cells_md) + " |\n")
    return head + "".join(rows)


def append_results(section: str) -> None:
    text = RESULTS_FILE.read_text(encoding="utf-8")
    RESULTS_FILE.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")


def write_json(cells: list[Cell], opts: argparse.Namespace, started: datetime, load: str) -> Path:
    core.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = core.RESULTS_DIR / f"queue-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    doc = {
        "started_utc": started.isoformat(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load,
        },
        "git_revision": core.git_revision(),
        "git_dirty": git_dirty(),
        "options": vars(opts),
        "settings": FIXED_SETTINGS,
        "cells": [
            {
                **dataclasses.asdict(cell),
                "drain_rates": None
                if cell.drain is None
                else {
                    "messages_per_s": round(cell.drain.messages_per_s, 1),
                    "events_per_s": round(cell.drain.events_per_s, 1),
                    "steady_messages_per_s": cell.drain.steady_messages_per_s,
                },
            }
            for cell in cells
        ],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- main


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # An exception, so the `finally` blocks stop every process and remove the topics.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    opts = parse_args(given)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        return bench(opts, given)
    except core.BenchError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; every process stopped[/yellow]")
        return 130


def load_average() -> str:
    with contextlib.suppress(OSError):
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return "?"


def plan(opts: argparse.Namespace) -> list[Cell]:
    cells = [] if opts.no_sync else [Cell("sync", "-", 0)]
    for processes in opts.drain_processes:
        cells += [Cell("async", backend, processes) for backend in opts.backends]
    return cells


def bench(opts: argparse.Namespace, argv: list[str]) -> int:
    started = datetime.now(UTC).replace(microsecond=0)
    load = load_average()
    binary = core.build_loadgen()
    service_pids = distributed_services.service_pids()
    cells = plan(opts)
    for number, cell in enumerate(cells):
        if number:
            time.sleep(core.SETTLE_S)
        try:
            run_cell(cell, opts, binary, service_pids)
        except BackendUnavailable as exc:
            cell.skipped = str(exc)
            console.print(f"[yellow]{cell.name}: skipped, {exc}[/yellow]")
    # The table needs ~110 columns; a narrower terminal would squeeze every figure.
    Console(width=max(console.width, 112)).print(render_table(cells, opts))
    for cell in cells:
        if cell.intake is not None:
            console.print(f"  {cell.name}: {describe_intake(cell.intake)}", highlight=False)
        if cell.drain is not None:
            console.print(f"  {cell.name}: {describe_drain(cell.drain)}", highlight=False)
    path = write_json(cells, opts, started, load)
    console.print(f"raw numbers: {path}")
    if opts.record:
        append_results(markdown_section(cells, opts, started, load, argv))
        console.print(f"appended a section to {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
