"""Core throughput/latency benchmark of an embedded Tessera server.

Starts `tessera serve` on a free port with a fresh data dir, seeds known visitors, then drives
`/track` with the Go load generator in `benchmarks/loadgen` and reports requests/s, events/s,
latency percentiles, peak memory and CPU of the server.

    python benchmarks/run_core.py [--duration 15] [--known 2000] [--record]
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

from rich import box
from rich.console import Console
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
LOADGEN_DIR = BENCH_DIR / "loadgen"
RESULTS_DIR = BENCH_DIR / "results"
SOURCE_ID = "bench-source"
ADMIN_EMAIL = "bench@example.com"
HEALTH_TIMEOUT_S = 30.0
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
        "--server-cmd",
        default=None,
        help="command that starts the server, '{port}' is replaced "
        "(default: 'tessera serve --port {port}')",
    )
    args = p.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0:
        p.error("--duration must be > 0 and --warmup >= 0")
    if not 0 <= args.known <= 1_000_000 or not 0.0 <= args.known_ratio <= 1.0:
        p.error("--known must be within 0..1000000 and --known-ratio within 0..1")
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


def create_source(base: str, token: str) -> None:
    payload = {"id": SOURCE_ID, "name": "Benchmark", "type": "rest"}
    status, data = http_json(
        "POST",
        f"{base}/event-source",
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    if status not in (200, 201):
        raise BenchError(f"POST /event-source answered {status}: {data!r:.300}")


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
    """The root pid and every live descendant (a server may fork worker processes)."""
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


def server_command(template: str | None, port: int) -> list[str]:
    if template:
        return [part.replace("{port}", str(port)) for part in shlex.split(template)]
    exe = shutil.which("tessera") or str(Path(sys.executable).with_name("tessera"))
    if not Path(exe).is_file():
        raise BenchError("`tessera` is not installed; run `pip install -e .` first")
    return [exe, "serve", "--port", str(port)]


@contextlib.contextmanager
def running_server(
    cmd: list[str], workdir: Path, password: str
) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env.update(
        TESSERA_DATA_DIR=str(workdir / "data"),
        TESSERA_ADMIN_EMAIL=ADMIN_EMAIL,
        TESSERA_ADMIN_PASSWORD=password,
        TESSERA_HOST="127.0.0.1",
        LOGGING_LEVEL="WARNING",
    )
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        # Own session: a Ctrl-C in the terminal reaches only us, and we stop the whole group.
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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


def wait_healthy(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited with code {proc.returncode} before it was healthy")
        with contextlib.suppress(OSError):
            if http_json("GET", f"{base}/health", timeout=1.0)[0] == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"GET /health did not answer 200 within {HEALTH_TIMEOUT_S:.0f} s")


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
) -> ScenarioResult:
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
    cpu_before, lg_cpu_before, t0 = cpu_seconds(server_pid), children_cpu_s(), time.monotonic()
    lg = run_loadgen(binary, lg_args, timeout_s=opts.warmup + opts.duration + 60)
    if lg.get("stopped_by") == "interrupt":
        # The generator caught Ctrl-C (we may not have, e.g. when started with SIGINT ignored).
        raise KeyboardInterrupt
    # Figures measured against a dead server are meaningless; stop rather than report them.
    if server.poll() is not None:
        raise BenchError(f"the server exited with code {server.returncode} during {scenario.label}")
    wall = time.monotonic() - t0
    goal, met = goal_of(scenario, lg)
    return ScenarioResult(
        key=scenario.key,
        short=scenario.short,
        label=scenario.label,
        loadgen=lg,
        wall_s=round(wall, 3),
        server_peak_rss_mib=round(peak_rss_mib(server_pid), 1),
        server_cpu_s=round(cpu_seconds(server_pid) - cpu_before, 3),
        loadgen_cpu_s=round(children_cpu_s() - lg_cpu_before, 3),
        goal=goal,
        goal_met=met,
    )


def run_all(
    opts: argparse.Namespace,
    binary: Path,
    base: str,
    server: subprocess.Popen[bytes],
    known: Path | None,
) -> list[ScenarioResult]:
    results: list[ScenarioResult] = []
    base_seed = secrets.randbits(48) + 1  # distinct seeds: new-visitor ids never repeat
    single_rps = 0.0
    for i, scenario in enumerate(SCENARIOS):
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
        )
        if scenario.key == "single":
            single_rps = float(res.loadgen["ok_requests_per_s"])
        results.append(res)
    return results


# --------------------------------------------------------------------------- reporting


def error_count(lg: dict[str, Any]) -> int:
    return sum(int(n) for n in lg["errors"].values())


def render_table(results: list[ScenarioResult]) -> Table:
    table = Table(
        title=f"Tessera core benchmark, {os.cpu_count()} CPUs shared with the load generator",
        caption="latency in ms; RSS: server peak MiB over its lifetime; CPU%: of one core",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("scenario", no_wrap=True)
    for col in ("req/s", "ev/s", "p50", "p99", "max", "errors", "RSS", "CPU%"):
        table.add_column(col, justify="right")
    table.add_column("goal")
    for r in results:
        lg, lat = r.loadgen, r.loadgen["latency_ms"]
        errors = error_count(lg)
        cpu_pct = 100 * r.server_cpu_s / r.wall_s if r.wall_s else 0.0
        table.add_row(
            r.short,
            f"{lg['ok_requests_per_s']:,.0f}",
            f"{lg['ok_events_per_s']:,.0f}",
            f"{lat['p50']:.1f}",
            f"{lat['p99']:.1f}",
            f"{lat['max']:.0f}",
            f"[red]{errors}[/red]" if errors else "0",
            f"{r.server_peak_rss_mib:.0f}",
            f"{cpu_pct:.0f}",
            "[green]yes[/green]" if r.goal_met else "[red]no[/red]",
        )
    return table


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
        console.print(
            f"  {r.short}: " + "; ".join(notes), markup=False, highlight=False, soft_wrap=True
        )


def git_revision() -> str:
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


def markdown_rows(results: list[ScenarioResult], stamp: str) -> str:
    head = (
        "| date (UTC) | commit | CPUs | scenario | req/s | events/s | p50 ms | p99 ms | max ms "
        "| errors | peak RSS MiB |\n"
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rev, cpus = git_revision(), os.cpu_count()
    rows = []
    for r in results:
        lg, lat = r.loadgen, r.loadgen["latency_ms"]
        rows.append(
            f"| {stamp} | {rev} | {cpus} | {r.label} | {lg['ok_requests_per_s']:,.0f} "
            f"| {lg['ok_events_per_s']:,.0f} | {lat['p50']:.2f} | {lat['p99']:.2f} "
            f"| {lat['max']:.2f} | {error_count(lg)} | {r.server_peak_rss_mib:.0f} |\n"
        )
    return head + "".join(rows)


def write_results(
    results: list[ScenarioResult], opts: argparse.Namespace, cmd: list[str], started: datetime
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"core-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    doc = {
        "started_utc": started.isoformat(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "git_revision": git_revision(),
        "options": {k: v for k, v in vars(opts).items() if k != "server_cmd"},
        # The port and binary path differ per run; keep only the shape of the command.
        "server_cmd": [Path(cmd[0]).name, *cmd[1:-1]],
        "goals": {
            "single_requests_per_s": GOAL_SINGLE_RPS,
            "batch_events_per_s": GOAL_BATCH_EPS,
            "half_load_p99_ms": GOAL_HALF_LOAD_P99_MS,
        },
        "scenarios": [dataclasses.asdict(r) for r in results],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- main


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the `finally` blocks stop the server and clean up.
    raise SystemExit(128 + signum)


def bench(opts: argparse.Namespace) -> int:
    started = datetime.now(UTC).replace(microsecond=0)
    binary = build_loadgen()
    workdir = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = server_command(opts.server_cmd, port)
        password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
        with running_server(cmd, workdir, password) as proc:
            wait_healthy(base, proc)
            create_source(base, get_token(base, password))
            known: Path | None = None
            if opts.known > 0:
                known = workdir / "known.tsv"
                console.print(f"[dim]seeding {opts.known} known visitors[/dim]")
                seed_known(port, opts.known, known)
            results = run_all(opts, binary, base, proc, known)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    console.print(render_table(results))
    print_details(results)
    path = write_results(results, opts, cmd, started)
    console.print(f"raw numbers: {path}")
    if opts.record:
        print()
        print(markdown_rows(results, started.strftime("%Y-%m-%d %H:%M")), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
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
