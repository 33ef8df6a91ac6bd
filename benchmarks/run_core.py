"""Core throughput/latency benchmark of a Tessera server.

Starts `tessera serve` on a free port with a fresh data dir, seeds known visitors, then drives
`/track` with the Go load generator in `benchmarks/loadgen` and reports requests/s, events/s,
latency percentiles, peak memory and CPU of the server.

``--mode embedded`` (the default) runs the server on its own SQLite files; ``--mode
distributed`` on the local Elasticsearch, MariaDB and Redis, in a fresh database and under
index and key prefixes of its own, removed at the end (``distributed_services.py``), and also
reports the CPU those services used; ``--mode compare`` runs embedded, then distributed, each on
a fresh server, and puts the two side by side.

With ``--automation realistic`` the server first gets a rule set (``realistic_automation.py``:
20 rules, 8 workflows, 3 segments, about 3 workflow runs per event); ``--automation compare``
runs every scenario without it and then with it, each on a fresh server, and puts the two side
by side.

    python benchmarks/run_core.py [--duration 15] [--known 2000] [--automation compare] [--record]
    python benchmarks/run_core.py --mode compare --scenarios single,batch20 [--record]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import http.client
import json
import os
import platform
import resource
import secrets
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import distributed_services
import realistic_automation
from rich import box
from rich.console import Console
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
LOADGEN_DIR = BENCH_DIR / "loadgen"
RESULTS_DIR = BENCH_DIR / "results"
SOURCE_ID = "bench-source"
ADMIN_EMAIL = "bench@example.com"
# Per API process (they start one after another); a start on a busy machine can take 40 s.
HEALTH_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
# Lets the server finish background work of one scenario (flushes, GC) before the next starts,
# so scenarios interfere less with each other.
SETTLE_S = 2.0

# Goals for a 2-core machine running the embedded store (see benchmarks/README.md).
GOAL_SINGLE_RPS = 4_000.0
GOAL_BATCH_EPS = 15_000.0
GOAL_HALF_LOAD_P99_MS = 25.0

console = Console()


class BenchError(Exception):
    """An expected failure: printed as one message, without a traceback."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    key: str
    short: str  # fits the table on an 80-column terminal
    label: str
    events: int
    # None = closed loop; otherwise a fraction of scenario (a)'s measured request rate.
    rate_fraction: float | None = None
    # Fraction of new visitors that identify with an e-mail from a pool of `emails`; once an
    # address is taken, each such request merges two profiles.
    identify: float = 0.0
    emails: int = 1000
    # None = use --known-ratio.
    known_ratio: float | None = None


SCENARIOS = (
    Scenario("single", "a 1/req", "(a) 1 event/req, closed loop", events=1),
    Scenario("batch20", "b 20/req", "(b) 20 events/req, closed loop", events=20),
    Scenario(
        "half_load",
        "c half",
        "(c) 1 event/req, open loop at 1/2 of (a)",
        events=1,
        rate_fraction=0.5,
    ),
    Scenario(
        "identify",
        "d ident",
        "(d) 1 event/req, closed loop, 20% of new visitors identify (5,000 e-mails)",
        events=1,
        identify=0.2,
        emails=5000,
    ),
    Scenario(
        "merge_heavy",
        "e merges",
        "(e) every request a new visitor identifying with one of 500 e-mails (a merge each)",
        events=1,
        identify=1.0,
        emails=500,
        known_ratio=0.0,
    ),
)


@dataclasses.dataclass
class AutomationSample:
    """What the newest stored events say about the workflows that ran for them."""

    events: int = 0  # read
    tracked: int = 0  # sent by the load generator (not made inside Tessera)
    internal: int = 0  # made inside Tessera: segment-entered/left, emitted
    runs_tracked: int = 0  # workflow runs recorded on tracked events
    runs_internal: int = 0  # ... and on internal events (they are caused by tracked ones)
    with_errors: int = 0  # events whose automation recorded an error
    runs_by_type: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    @property
    def runs_per_tracked_event(self) -> float:
        return (self.runs_tracked + self.runs_internal) / self.tracked if self.tracked else 0.0


@dataclasses.dataclass
class ScenarioResult:
    key: str
    short: str
    label: str
    loadgen: dict[str, Any]
    wall_s: float
    server_peak_rss_mib: float
    server_cpu_s: float
    loadgen_cpu_s: float
    goal: str
    goal_met: bool
    # With automation: what the newest stored events say about the workflows run for them.
    automation_sample: AutomationSample | None = None
    # Distributed mode: CPU seconds of each local service's process during the scenario
    # (warm-up included, like server_cpu_s), and the run's Elasticsearch counters' increase.
    services_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)
    elastic: dict[str, int] | None = None


@dataclasses.dataclass
class VariantResult:
    """One server's run of the chosen scenarios, in one mode, without or with the realistic
    automation."""

    automation: str  # "none" or "realistic"
    scenarios: list[ScenarioResult]
    round: int = 1
    mode: str = "embedded"  # or "distributed"
    # API processes of the server (`tessera serve --workers`): always 1 in the embedded mode.
    api_workers: int = 1

    @property
    def name(self) -> str:
        return f"{self.mode}, {self.automation}"


# --------------------------------------------------------------------------- arguments


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each")
    p.add_argument("--known", type=int, default=2000, help="known visitors to seed")
    p.add_argument("--known-ratio", type=float, default=0.5, help="share of known visitors")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="cap per scenario")
    p.add_argument("--record", action="store_true", help="print a Markdown row for RESULTS.md")
    p.add_argument(
        "--automation",
        choices=("none", "realistic", "compare"),
        default="none",
        help="none: no rules; realistic: the rule set of realistic_automation.py; "
        "compare: none, then realistic, each on a fresh server",
    )
    p.add_argument(
        "--mode",
        choices=("embedded", "distributed", "compare"),
        default="embedded",
        help="embedded: SQLite in the data dir; distributed: the local Elasticsearch, MariaDB "
        "and Redis (a fresh database and prefixes, removed at the end); compare: embedded, "
        "then distributed, each on a fresh server",
    )
    p.add_argument("--elastic-url", default="http://127.0.0.1:9200", help="distributed mode")
    p.add_argument("--mysql-host", default="127.0.0.1", help="distributed mode")
    p.add_argument("--mysql-port", type=int, default=3306, help="distributed mode")
    p.add_argument(
        "--mysql-user",
        default="tessera",
        help="distributed mode; must be allowed to create and drop databases named "
        f"{distributed_services.DATABASE_PREFIX}*; the password comes from "
        "$TESSERA_BENCH_MYSQL_PASSWORD (default: the development one of scripts/services)",
    )
    p.add_argument("--redis-host", default="127.0.0.1", help="distributed mode")
    p.add_argument(
        "--api-workers",
        type=int,
        default=1,
        help="distributed mode: API processes of the server (`tessera serve --workers N`; the "
        "embedded server always runs one, it refuses more); the server's CPU and memory are "
        "summed over all of its processes",
    )
    p.add_argument("--redis-port", type=int, default=6379, help="distributed mode")
    p.add_argument(
        "--scenarios",
        default=",".join(s.key for s in SCENARIOS),
        help="comma-separated scenarios to run, in the order of the table; "
        f"of: {', '.join(s.key for s in SCENARIOS)} (half_load needs single)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with compare: run both variants this many times, every other round in the "
        "reverse order (none, realistic, realistic, none, ...; or embedded, distributed, ...), "
        "so a drift of the machine's load does not favour one",
    )
    p.add_argument(
        "--sample",
        type=int,
        default=500,
        help="with automation: stored events read after each scenario to count workflow runs",
    )
    p.add_argument(
        "--server-cmd",
        default=None,
        help="command that starts the server, '{port}' is replaced "
        "(default: 'tessera serve --port {port}')",
    )
    p.add_argument(
        "--commit",
        default=None,
        help="commit to record (default: the checkout's HEAD); give the exported commit when "
        "--server-cmd runs an export of another one",
    )
    args = p.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0:
        p.error("--duration must be > 0 and --warmup >= 0")
    if not 0 <= args.known <= 1_000_000 or not 0.0 <= args.known_ratio <= 1.0:
        p.error("--known must be within 0..1000000 and --known-ratio within 0..1")
    if args.mode == "compare" and args.automation == "compare":
        p.error("compare one thing at a time: --mode compare or --automation compare")
    if not 1 <= args.api_workers <= 64:
        p.error("--api-workers must be within 1..64")
    if args.api_workers > 1 and args.mode == "embedded":
        p.error("--api-workers above 1 needs --mode distributed (or compare)")
    if not 1 <= args.rounds <= 10:
        p.error("--rounds must be within 1..10")
    if not 1 <= args.sample <= 1000:
        p.error("--sample must be within 1..1000 (one page of /events/search)")
    keys = [key.strip() for key in args.scenarios.split(",") if key.strip()]
    known_keys = {s.key for s in SCENARIOS}
    unknown = [key for key in keys if key not in known_keys]
    if unknown or not keys:
        p.error(f"--scenarios: unknown {', '.join(unknown) or '(none given)'}")
    if "half_load" in keys and "single" not in keys:
        p.error("--scenarios: half_load runs at half the rate single measured; include single")
    args.scenarios = [s for s in SCENARIOS if s.key in keys]
    return args


# --------------------------------------------------------------------------- load generator


def cache_dir() -> Path:
    env = os.environ.get("TESSERA_BENCH_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "tessera-bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).is_file():
        raise BenchError("the Go toolchain is needed to build benchmarks/loadgen (go not found)")
    return go


def build_loadgen() -> Path:
    """Build once; rebuild only when the sources are newer than the cached binary."""
    binary = cache_dir() / "tessera-loadgen"
    sources = [LOADGEN_DIR / "main.go", LOADGEN_DIR / "go.mod"]
    newest_source = max(s.stat().st_mtime for s in sources)
    if binary.is_file() and binary.stat().st_mtime > newest_source:
        return binary
    console.print(f"[dim]building load generator -> {binary}[/dim]")
    env = dict(os.environ)
    # Never let `go` try to download a toolchain: the module needs nothing but the stdlib.
    env.setdefault("GOTOOLCHAIN", "local")
    proc = subprocess.run(
        [find_go(), "build", "-trimpath", "-o", str(binary), "."],
        cwd=LOADGEN_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"go build failed:\n{proc.stderr.strip()}")
    return binary


# --------------------------------------------------------------------------- HTTP helpers

# An opener without proxies: benchmark traffic must go straight to 127.0.0.1 even when the
# environment sets HTTP_PROXY.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            status, raw = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def free_port() -> int:
    # Small race (the port is released before the server binds it); acceptable on a dev machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_token(base: str, password: str) -> str:
    form = urllib.parse.urlencode({"username": ADMIN_EMAIL, "password": password}).encode()
    status, data = http_json(
        "POST",
        f"{base}/user/token",
        body=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 200 or not isinstance(data, dict) or "access_token" not in data:
        raise BenchError(f"POST /user/token answered {status}: {data!r:.300}")
    return str(data["access_token"])


def admin_post(base: str, token: str, path: str, payload: dict[str, Any]) -> Any:
    """POST JSON as the admin; the answer, or BenchError unless it is 200 or 201."""
    status, data = http_json(
        "POST",
        f"{base}{path}",
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        timeout=60.0,
    )
    if status not in (200, 201):
        raise BenchError(f"POST {path} answered {status}: {data!r:.300}")
    return data


def create_source(base: str, token: str) -> None:
    admin_post(base, token, "/event-source", {"id": SOURCE_ID, "name": "Benchmark", "type": "rest"})


def create_automation(base: str, token: str) -> None:
    """The realistic rule set, created the way a user would: over the admin API."""
    for path, payload in realistic_automation.setup_requests():
        admin_post(base, token, path, payload)


def sample_automation(base: str, token: str, limit: int) -> AutomationSample:
    """Read the newest ``limit`` events and count ``metadata.automation.workflows``."""
    status, data = http_json(
        "POST",
        f"{base}/events/search",
        body=json.dumps({"limit": limit}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        timeout=60.0,
    )
    if status != 200 or not isinstance(data, dict):
        raise BenchError(f"POST /events/search answered {status}: {data!r:.300}")
    sample = AutomationSample()
    for event in data.get("result", []):
        metadata = event.get("metadata") or {}
        automation = metadata.get("automation") or {}
        runs = len(automation.get("workflows") or [])
        sample.events += 1
        if metadata.get("internal"):
            sample.internal += 1
            sample.runs_internal += runs
        else:
            sample.tracked += 1
            sample.runs_tracked += runs
        counted = sample.runs_by_type.setdefault(str(event.get("type")), [0, 0])
        counted[0] += 1
        counted[1] += runs
        if automation.get("errors"):
            sample.with_errors += 1
    return sample


# --------------------------------------------------------------------------- seeding


def seed_body(n: int) -> bytes:
    return json.dumps(
        {
            "source": {"id": SOURCE_ID},
            "session": {"id": str(uuid.uuid4())},
            "context": {"page": {"url": f"https://shop.example.com/p/{n}", "title": "Seed"}},
            "events": [{"type": "page-view", "properties": {"sku": f"sku-{n % 2000}"}}],
        }
    ).encode()


def seed_chunk(port: int, count: int, offset: int) -> list[str]:
    """Send `count` new-visitor requests over one keep-alive connection."""
    lines: list[str] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        _seed_requests(conn, range(offset, offset + count), lines)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise BenchError(f"seeding: POST /track failed: {exc!r}") from exc
    finally:
        conn.close()
    return lines


def _seed_requests(conn: http.client.HTTPConnection, numbers: range, lines: list[str]) -> None:
    for i in numbers:
        conn.request("POST", "/track", seed_body(i), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise BenchError(f"seeding: POST /track answered {resp.status}: {raw[:300]!r}")
        data = json.loads(raw)
        profile = (data.get("profile") or {}).get("id")
        session = (data.get("session") or {}).get("id")
        if not profile or not session:
            raise BenchError(f"seeding: answer lacks profile.id or session.id: {raw[:300]!r}")
        lines.append(f"{profile}\t{session}\n")


def seed_known(port: int, count: int, path: Path, threads: int = 4) -> None:
    chunks = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    offsets = [sum(chunks[:i]) for i in range(threads)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [
            pool.submit(seed_chunk, port, n, off)
            for n, off in zip(chunks, offsets, strict=True)
            if n
        ]
        lines = [line for f in futures for line in f.result()]
    path.write_text("".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------- server process


def descendants(root: int) -> list[int]:
    """The root pid and every live descendant: `tessera serve --workers N` is a supervisor
    and N API processes (plus multiprocessing's resource tracker), so the server's CPU and
    memory are summed over all of them. Only live processes count: none is restarted during a
    run, so none takes its CPU time away with it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process exited while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out: list[int] = []
    todo = [root]
    while todo and len(out) < 10_000:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def peak_rss_mib(root: int) -> float:
    """Sum of VmHWM over the tree: a process-lifetime peak, so later scenarios include earlier
    ones."""
    total_kib = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


def cpu_seconds(root: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / ticks


def server_command(template: str | None, port: int, api_workers: int) -> list[str]:
    """The default command names its API processes (the distributed mode would otherwise run
    one per CPU); a --server-cmd gets them as TESSERA_API_WORKERS (see run_variant), which
    versions without the setting ignore."""
    if template:
        return [part.replace("{port}", str(port)) for part in shlex.split(template)]
    exe = shutil.which("tessera") or str(Path(sys.executable).with_name("tessera"))
    if not Path(exe).is_file():
        raise BenchError("`tessera` is not installed; run `pip install -e .` first")
    return [exe, "serve", "--port", str(port), "--workers", str(api_workers)]


SERVICE_ADDRESS_VARIABLES = frozenset(
    ("ELASTIC_HOST", "MYSQL_HOST", "REDIS_HOST", "TESSERA_ELASTIC_INDEX_PREFIX", "MYSQL_DATABASE")
)


@contextlib.contextmanager
def running_server(
    cmd: list[str], workdir: Path, password: str, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    # Only the mode asked for: a server address left in the caller's environment would turn an
    # embedded run into a distributed one.
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ADDRESS_VARIABLES}
    env.update(extra_env or {})
    env.update(
        TESSERA_DATA_DIR=str(workdir / "data"),
        TESSERA_ADMIN_EMAIL=ADMIN_EMAIL,
        TESSERA_ADMIN_PASSWORD=password,
        TESSERA_HOST="127.0.0.1",
        LOGGING_LEVEL="WARNING",
        # The load generator is one address standing in for thousands of visitors: the
        # per-address throttle of new visitors (docs/security.md) would measure itself.
        TESSERA_THROTTLE_NEW_PROFILES_PER_MINUTE="0",
    )
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        # Own session: a Ctrl-C in the terminal reaches only us, and we stop the whole group.
        # Started in its own work dir: `python -m tessera` run from a checkout would otherwise
        # import that checkout's package ahead of PYTHONPATH.
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    except BaseException:
        tail = log_path.read_text("utf-8", "replace").splitlines()[-30:]
        if tail:
            console.print("[dim]last lines of the server log:[/dim]", markup=True)
            console.print("\n".join(tail), markup=False, highlight=False)
        raise
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)


def wait_healthy(base: str, proc: subprocess.Popen[bytes], processes: int = 1) -> None:
    """Until ``/health`` answered 200 from ``processes`` different API processes (it names the
    one that answered; each call is a new connection, which any of them may accept), so that
    no scenario measures a server whose processes are still starting. They start one after
    another: HEALTH_TIMEOUT_S each."""
    timeout_s = HEALTH_TIMEOUT_S * processes
    deadline = time.monotonic() + timeout_s
    answered: set[Any] = set()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited with code {proc.returncode} before it was healthy")
        with contextlib.suppress(OSError):
            status, body = http_json("GET", f"{base}/health", timeout=1.0)
            if status == 200:
                # A server without the field (an older --server-cmd) counts as one process.
                answered.add(body.get("process") if isinstance(body, dict) else None)
                if len(answered) >= processes or None in answered:
                    return
        time.sleep(0.1)
    raise BenchError(
        f"GET /health was not answered by {processes} API process(es) within {timeout_s:.0f} s"
    )


# --------------------------------------------------------------------------- scenarios


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_loadgen(binary: Path, args: list[str], timeout_s: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"load generator did not finish within {timeout_s:.0f} s") from exc
    if proc.stderr.strip():
        console.print(proc.stderr.strip(), style="dim", markup=False, highlight=False)
    if proc.returncode != 0:
        raise BenchError(f"load generator failed with code {proc.returncode}")
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except ValueError as exc:
        raise BenchError(f"load generator printed no JSON: {proc.stdout[:300]!r}") from exc
    return result


def goal_of(scenario: Scenario, lg: dict[str, Any]) -> tuple[str, bool]:
    if scenario.key == "single":
        return f">= {GOAL_SINGLE_RPS:,.0f} req/s", lg["ok_requests_per_s"] >= GOAL_SINGLE_RPS
    if scenario.key == "batch20":
        return f">= {GOAL_BATCH_EPS:,.0f} events/s", lg["ok_events_per_s"] >= GOAL_BATCH_EPS
    if scenario.key in ("identify", "merge_heavy"):
        return "no goal set; no errors", not lg["errors"] and lg["ok"] > 0
    met = lg["latency_ms"]["p99"] < GOAL_HALF_LOAD_P99_MS and not lg["errors"] and lg["ok"] > 0
    return f"p99 < {GOAL_HALF_LOAD_P99_MS:.0f} ms, no errors", met


def run_scenario(
    scenario: Scenario,
    *,
    binary: Path,
    base: str,
    server: subprocess.Popen[bytes],
    opts: argparse.Namespace,
    known_file: Path | None,
    rate: float,
    seed: int,
    token: str | None,
    place: distributed_services.RunPlace | None = None,
    service_pids: dict[str, int] | None = None,
) -> ScenarioResult:
    """Run one scenario; with ``token`` (automation on) also sample the events it stored; with
    ``place`` (distributed mode) also measure the services' CPU and the run's index counters."""
    lg_args = [
        f"-url={base}",
        f"-source={SOURCE_ID}",
        f"-duration={opts.warmup + opts.duration}s",
        f"-warmup={opts.warmup}s",
        f"-max-requests={opts.max_requests}",
        f"-connections={opts.connections}",
        f"-events={scenario.events}",
        f"-rate={rate}",
        f"-seed={seed}",
    ]
    known_ratio = opts.known_ratio if scenario.known_ratio is None else scenario.known_ratio
    if known_file is not None and known_ratio > 0:
        lg_args += [f"-known={known_file}", f"-known-ratio={known_ratio}"]
    else:
        lg_args.append("-known-ratio=0")
    if scenario.identify > 0:
        lg_args += [f"-identify={scenario.identify}", f"-emails={scenario.emails}"]
    console.print(f"[bold]{scenario.label}[/bold] ...")
    server_pid = server.pid
    pids = service_pids or {}
    elastic_before = distributed_services.index_counters(place) if place is not None else None
    services_before = distributed_services.services_cpu_s(pids)
    cpu_before, lg_cpu_before, t0 = cpu_seconds(server_pid), children_cpu_s(), time.monotonic()
    lg = run_loadgen(binary, lg_args, timeout_s=opts.warmup + opts.duration + 60)
    services_after = distributed_services.services_cpu_s(pids)
    if lg.get("stopped_by") == "interrupt":
        # The generator caught Ctrl-C (we may not have, e.g. when started with SIGINT ignored).
        raise KeyboardInterrupt
    # Figures measured against a dead server are meaningless; stop rather than report them.
    if server.poll() is not None:
        raise BenchError(f"the server exited with code {server.returncode} during {scenario.label}")
    wall = time.monotonic() - t0
    server_cpu = cpu_seconds(server_pid) - cpu_before
    elastic: dict[str, int] | None = None
    if place is not None and elastic_before is not None:
        after = distributed_services.index_counters(place)
        elastic = {key: after[key] - elastic_before.get(key, 0) for key in after}
    goal, met = goal_of(scenario, lg)
    sample = sample_automation(base, token, opts.sample) if token is not None else None
    return ScenarioResult(
        key=scenario.key,
        short=scenario.short,
        label=scenario.label,
        loadgen=lg,
        wall_s=round(wall, 3),
        server_peak_rss_mib=round(peak_rss_mib(server_pid), 1),
        server_cpu_s=round(server_cpu, 3),
        loadgen_cpu_s=round(children_cpu_s() - lg_cpu_before, 3),
        goal=goal,
        goal_met=met,
        automation_sample=sample,
        services_cpu_s={
            name: round(services_after[name] - cpu, 3)
            for name, cpu in services_before.items()
            if name in services_after
        },
        elastic=elastic,
    )


def run_all(
    opts: argparse.Namespace,
    binary: Path,
    base: str,
    server: subprocess.Popen[bytes],
    known: Path | None,
    *,
    base_seed: int,
    token: str | None,
    place: distributed_services.RunPlace | None = None,
    service_pids: dict[str, int] | None = None,
) -> list[ScenarioResult]:
    results: list[ScenarioResult] = []
    single_rps = 0.0
    for i, scenario in enumerate(opts.scenarios):
        rate = 0.0
        if scenario.rate_fraction is not None:
            rate = round(single_rps * scenario.rate_fraction, 1)
            if rate <= 0:
                console.print(f"[yellow]skipping {scenario.label}: (a) measured no throughput")
                continue
        if results:
            time.sleep(SETTLE_S)
        res = run_scenario(
            scenario,
            binary=binary,
            base=base,
            server=server,
            opts=opts,
            known_file=known,
            rate=rate,
            seed=base_seed + i,
            token=token,
            place=place,
            service_pids=service_pids,
        )
        if scenario.key == "single":
            single_rps = float(res.loadgen["ok_requests_per_s"])
        results.append(res)
    return results


# --------------------------------------------------------------------------- reporting

VARIANT_TITLES = {
    "none": "no rules",
    "realistic": "realistic automation ({rules} rules, {workflows} workflows, {segments} segments)",
}
MODE_TITLES = {
    "embedded": "embedded mode (SQLite)",
    "distributed": "distributed mode (Elasticsearch, MariaDB, Redis)",
}


def variant_title(automation: str, mode: str = "embedded") -> str:
    rules = VARIANT_TITLES[automation].format(**realistic_automation.describe())
    return f"{MODE_TITLES[mode]}, {rules}"


def error_count(lg: dict[str, Any]) -> int:
    return sum(int(n) for n in lg["errors"].values())


def server_cpu_us_per_event(r: ScenarioResult) -> float:
    """Server CPU per event sent, warm-up included on both sides (the CPU figure covers the
    whole load generator run); steadier than throughput on a shared machine."""
    return _per_event_us(r, r.server_cpu_s)


def service_cpu_us_per_event(r: ScenarioResult, service: str) -> float | None:
    """A local service's CPU per event sent, like the server's; None when not measured."""
    cpu = r.services_cpu_s.get(service)
    return None if cpu is None else _per_event_us(r, cpu)


def _per_event_us(r: ScenarioResult, cpu_s: float) -> float:
    sent_events = int(r.loadgen["total_sent"]) * int(r.loadgen["events_per_request"])
    return 1e6 * cpu_s / sent_events if sent_events else 0.0


def elastic_cpu_pct(r: ScenarioResult) -> float | None:
    cpu = r.services_cpu_s.get("elasticsearch")
    return None if cpu is None or not r.wall_s else 100 * cpu / r.wall_s


def render_table(variant: VariantResult) -> Table:
    results = variant.scenarios
    distributed = variant.mode == "distributed"
    table = Table(
        title=f"Tessera core benchmark, {variant_title(variant.automation, variant.mode)}, "
        + (f"{variant.api_workers} API processes, " if variant.api_workers > 1 else "")
        + f"{os.cpu_count()} CPUs shared with the load generator",
        caption="latency in ms; RSS: server peak MiB over its lifetime; CPU%: of one core"
        + ("; ES%: Elasticsearch's CPU, of one core" if distributed else ""),
        box=box.SIMPLE_HEAD,
    )
    table.add_column("scenario", no_wrap=True)
    columns = ["req/s", "ev/s", "p50", "p99", "max", "errors", "RSS", "CPU%"]
    for col in [*columns, "ES%"] if distributed else columns:
        table.add_column(col, justify="right")
    table.add_column("goal")
    for r in results:
        lg, lat = r.loadgen, r.loadgen["latency_ms"]
        errors = error_count(lg)
        cpu_pct = 100 * r.server_cpu_s / r.wall_s if r.wall_s else 0.0
        cells = [
            r.short,
            f"{lg['ok_requests_per_s']:,.0f}",
            f"{lg['ok_events_per_s']:,.0f}",
            f"{lat['p50']:.1f}",
            f"{lat['p99']:.1f}",
            f"{lat['max']:.0f}",
            f"[red]{errors}[/red]" if errors else "0",
            f"{r.server_peak_rss_mib:.0f}",
            f"{cpu_pct:.0f}",
        ]
        if distributed:
            es = elastic_cpu_pct(r)
            cells.append("-" if es is None else f"{es:.0f}")
        cells.append("[green]yes[/green]" if r.goal_met else "[red]no[/red]")
        table.add_row(*cells)
    return table


def describe_sample(sample: AutomationSample) -> str:
    by_type = ", ".join(
        f"{kind} {runs / count:.2f}"
        for kind, (count, runs) in sorted(sample.runs_by_type.items())
        if count
    )
    return (
        f"workflow runs per tracked event {sample.runs_per_tracked_event:.2f} "
        f"(newest {sample.events} events: {sample.tracked} tracked, {sample.internal} internal, "
        f"{sample.with_errors} with automation errors; runs per event by type: {by_type})"
    )


def describe_services(r: ScenarioResult) -> str:
    """What the local services did during a distributed scenario (warm-up included)."""
    parts = []
    for name, cpu in sorted(r.services_cpu_s.items()):
        pct = 100 * cpu / r.wall_s if r.wall_s else 0.0
        per_event = service_cpu_us_per_event(r, name) or 0.0
        parts.append(f"{name} CPU {cpu:.1f} s ({pct:.0f}% of a core, {per_event:.0f} µs/event)")
    if r.elastic is not None and r.wall_s:
        docs, refreshes = r.elastic.get("docs_indexed", 0), r.elastic.get("shard_refreshes", 0)
        parts.append(
            f"Elasticsearch indexed {docs / r.wall_s:,.0f} docs/s, "
            f"{refreshes / r.wall_s:,.0f} shard refreshes/s"
        )
    return "; ".join(parts) if parts else "services not measured"


def print_details(results: list[ScenarioResult]) -> None:
    """What the table has no room for: the goals, the error kinds, generator saturation."""
    for r in results:
        lg = r.loadgen
        notes = [f"goal {r.goal}"]
        if lg["errors"]:
            notes.append(f"errors {lg['errors']}")
        if lg["rate_target"]:
            notes.append(f"target {lg['rate_target']:,.0f} req/s, {lg['late_sends']} late sends")
        notes.append(f"loadgen CPU {r.loadgen_cpu_s:.1f} s")
        notes.append(f"server CPU {server_cpu_us_per_event(r):.0f} µs/event")
        if r.services_cpu_s or r.elastic is not None:
            notes.append(describe_services(r))
        if r.automation_sample is not None:
            notes.append(describe_sample(r.automation_sample))
        console.print(
            f"  {r.short}: " + "; ".join(notes), markup=False, highlight=False, soft_wrap=True
        )


def _change(before: float, after: float) -> str:
    return f"{100 * (after - before) / before:+.0f}%" if before else "-"


Pairs = list[tuple[ScenarioResult, ScenarioResult]]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What a compare run varies: the automation (none/realistic) or the mode."""

    field: str  # the VariantResult attribute that differs
    first: str
    second: str
    title: str


COMPARISONS = {
    "automation": Comparison(
        "automation", "none", "realistic", "Without and with the realistic automation"
    ),
    "mode": Comparison("mode", "embedded", "distributed", "Embedded and distributed mode"),
}


def comparison_of(opts: argparse.Namespace) -> Comparison | None:
    if opts.mode == "compare":
        return COMPARISONS["mode"]
    if opts.automation == "compare":
        return COMPARISONS["automation"]
    return None


def compared(variants: list[VariantResult], round_number: int, how: Comparison) -> Pairs:
    """(first, second) pairs of the scenarios both variants ran in this round."""
    in_round = [v for v in variants if v.round == round_number]
    first = next((v for v in in_round if getattr(v, how.field) == how.first), None)
    second = next((v for v in in_round if getattr(v, how.field) == how.second), None)
    if first is None or second is None:
        return []
    by_key = {r.key: r for r in second.scenarios}
    return [(r, by_key[r.key]) for r in first.scenarios if r.key in by_key]


def render_comparison(pairs: Pairs, heading: str, how: Comparison) -> Table:
    with_es = how.field == "mode"
    table = Table(
        title=f"{how.title}, side by side{heading}",
        caption=f"first figure: {how.first}, then {how.second}; req/s: answered 200 per second; "
        "CPU: server µs per event sent; (c) runs at half of its own variant's (a)"
        + ("; ES: Elasticsearch µs per event sent" if with_es else ""),
        box=box.SIMPLE_HEAD,
    )
    table.add_column("scenario", no_wrap=True)
    columns = ["req/s", how.second[:5], "Δ", "p99", how.second[:5], "Δ", "CPU", how.second[:5]]
    columns += ["Δ", "ES"] if with_es else ["Δ"]
    for col in columns:
        table.add_column(col, justify="right")
    for first, second in pairs:
        rps = [float(r.loadgen["ok_requests_per_s"]) for r in (first, second)]
        p99 = [float(r.loadgen["latency_ms"]["p99"]) for r in (first, second)]
        cpu = [server_cpu_us_per_event(r) for r in (first, second)]
        cells = [
            first.short,
            f"{rps[0]:,.0f}",
            f"{rps[1]:,.0f}",
            _change(*rps),
            f"{p99[0]:.1f}",
            f"{p99[1]:.1f}",
            _change(*p99),
            f"{cpu[0]:.0f}",
            f"{cpu[1]:.0f}",
            _change(*cpu),
        ]
        if with_es:
            es = service_cpu_us_per_event(second, "elasticsearch")
            cells.append("-" if es is None else f"{es:.0f}")
        table.add_row(*cells)
    return table


RECORDED_COMMIT: list[str] = []  # --commit, when given


def git_revision() -> str:
    if RECORDED_COMMIT:
        return RECORDED_COMMIT[0]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if proc.returncode == 0:
            return proc.stdout.strip()
    return "-"


def markdown_rows(variants: list[VariantResult], stamp: str) -> str:
    """Rows in the format of RESULTS.md; a column for the mode or the automation when a
    variant differs from plain embedded."""
    with_mode = any(v.mode != "embedded" for v in variants)
    with_rules = any(v.automation != "none" for v in variants)
    extra = [name for name, on in (("mode", with_mode), ("automation", with_rules)) if on]
    extra_head = "".join(f"| {name} " for name in extra)
    extra_rule = "|---" * len(extra)
    head = (
        f"| date (UTC) | commit | CPUs | scenario {extra_head}| req/s | events/s | p50 ms "
        "| p99 ms | max ms | errors | peak RSS MiB |\n"
        f"|---|---|---|---{extra_rule}|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rev, cpus = git_revision(), os.cpu_count()
    rows = []
    rounds = max(v.round for v in variants)
    for variant in variants:
        cells = [getattr(variant, name) for name in extra]
        if with_mode and variant.api_workers > 1:
            cells[0] = f"{cells[0]}, {variant.api_workers} API processes"
        if rounds > 1 and cells:
            cells[-1] = f"{cells[-1]}, round {variant.round}"
        extra_cells = "".join(f"| {cell} " for cell in cells)
        for r in variant.scenarios:
            lg, lat = r.loadgen, r.loadgen["latency_ms"]
            rows.append(
                f"| {stamp} | {rev} | {cpus} | {r.label} {extra_cells}"
                f"| {lg['ok_requests_per_s']:,.0f} "
                f"| {lg['ok_events_per_s']:,.0f} | {lat['p50']:.2f} | {lat['p99']:.2f} "
                f"| {lat['max']:.2f} | {error_count(lg)} | {r.server_peak_rss_mib:.0f} |\n"
            )
    return head + "".join(rows)


def markdown_comparison(pairs: Pairs, how: Comparison) -> str:
    if how.field == "mode":
        return markdown_mode_comparison(pairs)
    head = (
        "| scenario | req/s none | req/s realistic | change | p99 ms none | p99 ms realistic "
        "| server CPU µs/event none | realistic | workflow runs/event |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for plain, rich in pairs:
        rps = [float(r.loadgen["ok_requests_per_s"]) for r in (plain, rich)]
        sample = rich.automation_sample
        runs = f"{sample.runs_per_tracked_event:.2f}" if sample is not None else "-"
        rows.append(
            f"| {plain.label} | {rps[0]:,.0f} | {rps[1]:,.0f} | {_change(*rps)} "
            f"| {plain.loadgen['latency_ms']['p99']:.2f} | {rich.loadgen['latency_ms']['p99']:.2f} "
            f"| {server_cpu_us_per_event(plain):.0f} | {server_cpu_us_per_event(rich):.0f} "
            f"| {runs} |\n"
        )
    return head + "".join(rows)


def markdown_mode_comparison(pairs: Pairs) -> str:
    """Embedded (E) and distributed (D) side by side, with what the services used in D."""
    head = (
        "| scenario | req/s E | req/s D | change | events/s E | events/s D | p50 ms E | p50 ms D "
        "| p99 ms E | p99 ms D | errors E | errors D | server CPU µs/event E | D "
        "| Elasticsearch CPU µs/event D | ES CPU % of a core D | ES docs indexed/s D |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for emb, dist in pairs:
        rps = [float(r.loadgen["ok_requests_per_s"]) for r in (emb, dist)]
        eps = [float(r.loadgen["ok_events_per_s"]) for r in (emb, dist)]
        lat = [r.loadgen["latency_ms"] for r in (emb, dist)]
        es_us = service_cpu_us_per_event(dist, "elasticsearch")
        es_pct = elastic_cpu_pct(dist)
        docs = (dist.elastic or {}).get("docs_indexed")
        docs_rate = f"{docs / dist.wall_s:,.0f}" if docs is not None and dist.wall_s else "-"
        rows.append(
            f"| {emb.label} | {rps[0]:,.0f} | {rps[1]:,.0f} | {_change(*rps)} "
            f"| {eps[0]:,.0f} | {eps[1]:,.0f} | {lat[0]['p50']:.2f} | {lat[1]['p50']:.2f} "
            f"| {lat[0]['p99']:.2f} | {lat[1]['p99']:.2f} "
            f"| {error_count(emb.loadgen)} | {error_count(dist.loadgen)} "
            f"| {server_cpu_us_per_event(emb):.0f} | {server_cpu_us_per_event(dist):.0f} "
            f"| {'-' if es_us is None else f'{es_us:.0f}'} "
            f"| {'-' if es_pct is None else f'{es_pct:.0f}'} | {docs_rate} |\n"
        )
    return head + "".join(rows)


def write_results(
    variants: list[VariantResult], opts: argparse.Namespace, cmd: list[str], started: datetime
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"core-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    options = {k: v for k, v in vars(opts).items() if k not in ("server_cmd", "scenarios")}
    options["scenarios"] = [s.key for s in opts.scenarios]
    doc = {
        "started_utc": started.isoformat(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "git_revision": git_revision(),
        "options": options,
        # The port and binary path differ per run; keep only the shape of the command.
        "server_cmd": [Path(cmd[0]).name, *cmd[1:-1]],
        "goals": {
            "single_requests_per_s": GOAL_SINGLE_RPS,
            "batch_events_per_s": GOAL_BATCH_EPS,
            "half_load_p99_ms": GOAL_HALF_LOAD_P99_MS,
        },
        "automation": realistic_automation.describe(),
        "variants": [dataclasses.asdict(v) for v in variants],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- main


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the `finally` blocks stop the server and clean up.
    raise SystemExit(128 + signum)


MODES: dict[str, tuple[str, ...]] = {
    "embedded": ("embedded",),
    "distributed": ("distributed",),
    "compare": ("embedded", "distributed"),
}
VARIANTS = {"none": ("none",), "realistic": ("realistic",), "compare": ("none", "realistic")}


def service_addresses(opts: argparse.Namespace) -> distributed_services.ServiceAddresses:
    return distributed_services.ServiceAddresses(
        elastic_url=opts.elastic_url.rstrip("/"),
        mysql_host=opts.mysql_host,
        mysql_port=opts.mysql_port,
        mysql_user=opts.mysql_user,
        mysql_password=os.environ.get("TESSERA_BENCH_MYSQL_PASSWORD", "tessera-dev-password"),
        redis_host=opts.redis_host,
        redis_port=opts.redis_port,
    )


@contextlib.contextmanager
def run_place(
    opts: argparse.Namespace, mode: str
) -> Iterator[distributed_services.RunPlace | None]:
    """Distributed mode: a fresh database and prefixes, removed afterwards whatever happens."""
    if mode != "distributed":
        yield None
        return
    try:
        place = distributed_services.new_place(service_addresses(opts))
    except distributed_services.ServiceError as exc:
        raise BenchError(f"distributed mode needs the local services: {exc}") from exc
    console.print(f"[dim]distributed: {place.describe()}[/dim]")
    try:
        yield place
    finally:
        problems = place.clean()
        for problem in problems:
            console.print(f"[yellow]left behind ({place.prefix}): {problem}[/yellow]")
        if not problems:
            console.print(f"[dim]removed {place.describe()}[/dim]")


def run_variant(
    opts: argparse.Namespace, binary: Path, automation: str, base_seed: int, mode: str
) -> tuple[VariantResult, list[str]]:
    """Every chosen scenario against one fresh server; the results and the server command."""
    console.rule(f"[bold]{variant_title(automation, mode)}[/bold]")
    workdir = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    try:
        with run_place(opts, mode) as place:
            pids = distributed_services.service_pids() if place is not None else {}
            if place is not None and "elasticsearch" not in pids:
                console.print("[yellow]Elasticsearch's pid not found: its CPU is not reported")
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            api_workers = opts.api_workers if mode == "distributed" else 1
            cmd = server_command(opts.server_cmd, port, api_workers)
            password = "".join(
                secrets.choice(string.ascii_letters + string.digits) for _ in range(24)
            )
            env = {**(place.server_env() if place is not None else {})}
            env["TESSERA_API_WORKERS"] = str(api_workers)
            with running_server(cmd, workdir, password, env) as proc:
                wait_healthy(base, proc, api_workers)
                token = get_token(base, password)
                create_source(base, token)
                if automation == "realistic":
                    # Before seeding: known visitors then carry the traits the rules give them.
                    console.print(f"[dim]creating the {VARIANT_TITLES['realistic']}[/dim]")
                    create_automation(base, token)
                known: Path | None = None
                if opts.known > 0:
                    known = workdir / "known.tsv"
                    console.print(f"[dim]seeding {opts.known} known visitors[/dim]")
                    seed_known(port, opts.known, known)
                results = run_all(
                    opts,
                    binary,
                    base,
                    proc,
                    known,
                    base_seed=base_seed,
                    token=token if automation != "none" else None,
                    place=place,
                    service_pids=pids,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return VariantResult(automation, results, mode=mode, api_workers=api_workers), cmd


def bench(opts: argparse.Namespace) -> int:
    started = datetime.now(UTC).replace(microsecond=0)
    binary = build_loadgen()
    # One seed for every variant: each sends the same request bodies in the same order (every
    # variant has a fresh server, so new-visitor ids are new to it all the same).
    base_seed = secrets.randbits(48) + 1
    how = comparison_of(opts)
    variants: list[VariantResult] = []
    for round_number in range(1, opts.rounds + 1):
        order = [(m, a) for m in MODES[opts.mode] for a in VARIANTS[opts.automation]]
        if round_number % 2 == 0:
            order = order[::-1]
        for mode, automation in order:
            if variants:
                time.sleep(SETTLE_S)
            variant, cmd = run_variant(opts, binary, automation, base_seed, mode)
            variant.round = round_number
            variants.append(variant)
    for variant in variants:
        console.print(render_table(variant))
        print_details(variant.scenarios)
    comparisons = []
    for round_number in range(1, opts.rounds + 1) if how is not None else ():
        assert how is not None
        pairs = compared(variants, round_number, how)
        if pairs:
            sequence = " -> ".join(
                getattr(v, how.field) for v in variants if v.round == round_number
            )
            heading = f", round {round_number} ({sequence})" if opts.rounds > 1 else ""
            comparisons.append((heading, pairs))
            console.print(render_comparison(pairs, heading, how))
    path = write_results(variants, opts, cmd, started)
    console.print(f"raw numbers: {path}")
    if opts.record:
        print()
        print(markdown_rows(variants, started.strftime("%Y-%m-%d %H:%M")), end="")
        for heading, pairs in comparisons:
            assert how is not None
            print(f"\nside by side{heading}:\n")
            print(markdown_comparison(pairs, how), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.commit:
        RECORDED_COMMIT.append(opts.commit)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        return bench(opts)
    except BenchError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; server stopped[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
