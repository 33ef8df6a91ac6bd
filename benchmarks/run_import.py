"""History import benchmark: `tessera import` of N events spread over three years.

Generates a file of N events (default 1,000,000; half Tracardi-shaped, half Tessera-shaped, in
shuffled order) for N/25 visitors with about five sessions each, starts a fresh server
(embedded, or distributed on the local Elasticsearch, MariaDB and Redis under prefixes of its
own, removed afterwards: run_core.py and distributed_services.py), imports the file with the
real CLI and measures the rate. Then it checks what was stored: events per month partition
(distributed: the documents in each Elasticsearch event index; embedded: the stored events'
times), the numbers of profiles and sessions, and a sample of profiles' counters and
first-seen times. The import is stopped at --time-limit (the figures say so).

    PYTHONPATH=$PWD python benchmarks/run_import.py [--events 1000000] [--mode embedded]
    PYTHONPATH=$PWD python benchmarks/run_import.py --mode distributed --events 100000
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import run_core
from run_core import BenchError, admin_post, console, free_port, get_token, http_json

from tests.support.history_file import SPAN, START, tessera_line, tracardi_line

SAMPLE_PROFILES = 300


@dataclass
class Expected:
    events: int = 0
    # visitor -> (events, sessions, first seen)
    visitors: dict[str, tuple[int, int, datetime]] = field(default_factory=dict)
    sessions: int = 0
    by_month: Counter[str] = field(default_factory=Counter)
    profiles_by_year: Counter[str] = field(default_factory=Counter)
    sessions_by_quarter: Counter[str] = field(default_factory=Counter)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--events-per-visitor", type=int, default=25, help="on average")
    p.add_argument("--mode", choices=("embedded", "distributed"), default="embedded")
    p.add_argument("--time-limit", type=float, default=2400.0, help="seconds for the import")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--record", action="store_true", help="print a Markdown row for RESULTS.md")
    p.add_argument("--elastic-url", default="http://127.0.0.1:9200")
    p.add_argument("--mysql-host", default="127.0.0.1")
    p.add_argument("--mysql-port", type=int, default=3306)
    p.add_argument("--mysql-user", default="tessera")
    p.add_argument("--redis-host", default="127.0.0.1")
    p.add_argument("--redis-port", type=int, default=6379)
    return p.parse_args(argv)


def generate(path: Path, total: int, per_visitor: int, seed: int) -> Expected:
    """Visitors one after another, their lines shuffled within windows of 5,000 (an export
    is neither sorted by visitor and time nor random: it comes in pages)."""
    rng = random.Random(seed)
    expected = Expected()
    span_s = int(SPAN.total_seconds())
    window: list[str] = []
    number = 0
    with path.open("w") as out:
        while expected.events < total:
            visitor = f"v{number}"
            number += 1
            wanted = min(rng.randint(1, 2 * per_visitor - 1), total - expected.events)
            shape = tracardi_line if number % 2 else tessera_line
            done = sessions = 0
            first_seen: datetime | None = None
            while done < wanted:
                at = START + timedelta(seconds=rng.randint(0, span_s))
                session = f"{visitor}-s{sessions}"
                sessions += 1
                size = min(rng.randint(1, max(1, 2 * per_visitor // 5 - 1)), wanted - done)
                for position in range(size):
                    at += timedelta(seconds=rng.randint(5, 300))
                    if position == 0:
                        expected.sessions_by_quarter[_quarter(at)] += 1
                        first_seen = at if first_seen is None else min(first_seen, at)
                    window.append(
                        json.dumps(shape(f"{visitor}-e{done}", "page-view", at, visitor, session))
                    )
                    expected.by_month[f"{at:%Y-%m}"] += 1
                    done += 1
            assert first_seen is not None
            expected.visitors[visitor] = (wanted, sessions, first_seen)
            expected.profiles_by_year[f"{first_seen:%Y}"] += 1
            expected.events += wanted
            expected.sessions += sessions
            if len(window) >= 5_000:
                rng.shuffle(window)
                out.write("\n".join(window) + "\n")
                window.clear()
        rng.shuffle(window)
        out.write("".join(line + "\n" for line in window))
    return expected


def _quarter(moment: datetime) -> str:
    return f"{moment:%Y}-q{(moment.month - 1) // 3 + 1}"


@dataclass
class Measured:
    imported: int = 0
    plan_s: float = 0.0
    send_s: float = 0.0
    finished: bool = False
    output: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.imported / max(self.send_s, 1e-9)


def run_import(file: Path, base: str, source: str, key: str, limit_s: float) -> Measured:
    """The real CLI, timed: checking and sorting (until it names the events to import), then
    sending; stopped at ``limit_s`` whether or not it prints anything."""
    command = [sys.executable, "-m", "tessera", "import", str(file), "--source", source]
    command += ["--url", base]
    env = {**_env_without_tessera(), "TESSERA_IMPORT_KEY": key, "COLUMNS": "120"}
    measured = Measured()
    started = time.monotonic()
    sending_from: list[float] = []
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)

    def follow() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            measured.output.append(line.rstrip())
            if "events to import" in line:
                sending_from.append(time.monotonic())
                measured.plan_s = sending_from[0] - started
                console.print(
                    f"[dim]{line.strip()} (checked and sorted in {measured.plan_s:.0f} s)"
                )
            elif line.startswith(("Imported", "Refused", "Import stopped")):
                console.print(line.rstrip())

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        process.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(timeout=60)
    reader.join(timeout=10)
    measured.send_s = time.monotonic() - (sending_from[0] if sending_from else started)
    measured.finished = process.returncode == 0
    measured.imported = _checkpoint_done(file)
    return measured


def _env_without_tessera() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}


def _checkpoint_done(file: Path) -> int:
    with sqlite3.connect(file.with_name(file.name + ".import-checkpoint")) as db:
        row = db.execute("SELECT value FROM meta WHERE name = 'done'").fetchone()
    return int(row[0]) if row else 0


def stored_embedded(data_dir: Path) -> dict[str, Any]:
    with sqlite3.connect(f"file:{data_dir / 'events.sqlite'}?mode=ro", uri=True) as db:
        months = db.execute(
            "SELECT strftime('%Y-%m', time, 'unixepoch'), count(*) FROM events GROUP BY 1"
        ).fetchall()
        profiles = db.execute("SELECT count(*) FROM profiles").fetchone()[0]
        sessions = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    return {"by_month": dict(months), "profiles": profiles, "sessions": sessions}


def stored_distributed(elastic_url: str, prefix: str) -> dict[str, Any]:
    run_core.http_json("POST", f"{elastic_url}/{prefix}.*/_refresh", timeout=120)
    listing = f"{elastic_url}/_cat/indices/{prefix}.*?format=json&h=index"
    _status, rows = http_json("GET", listing, timeout=60)
    found: dict[str, dict[str, int]] = {"event": {}, "profile": {}, "session": {}}
    for row in rows or []:
        index = str(row["index"])
        for kind, counts in found.items():
            marker = f".{kind}.v"
            if marker in index and "-" in index.split(marker, 1)[1]:
                suffix = index.split(marker, 1)[1].split("-", 1)[1]
                _s, answer = http_json("GET", f"{elastic_url}/{index}/_count", timeout=60)
                if int(answer["count"]):  # partitions are created ahead, empty
                    counts[suffix] = counts.get(suffix, 0) + int(answer["count"])
    return {
        "by_month": found["event"],
        "profiles": sum(found["profile"].values()),
        "sessions": sum(found["session"].values()),
        "profiles_by_year": found["profile"],
        "sessions_by_quarter": found["session"],
    }


def check(expected: Expected, stored: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if stored["by_month"] != dict(expected.by_month):
        wrong = {
            month: (stored["by_month"].get(month), count)
            for month, count in expected.by_month.items()
            if stored["by_month"].get(month) != count
        }
        problems.append(
            f"events per month (stored, expected) differ: {dict(list(wrong.items())[:6])}"
        )
    if stored["profiles"] != len(expected.visitors):
        problems.append(f"{stored['profiles']} profiles, expected {len(expected.visitors)}")
    if stored["sessions"] != expected.sessions:
        problems.append(f"{stored['sessions']} sessions, expected {expected.sessions}")
    for name, wanted in (
        ("profiles_by_year", expected.profiles_by_year),
        ("sessions_by_quarter", expected.sessions_by_quarter),
    ):
        if name in stored and stored[name] != dict(wanted):
            problems.append(f"{name}: stored {stored[name]}, expected {dict(wanted)}")
    return problems


def check_sample(base: str, token: str, expected: Expected, seed: int) -> list[str]:
    """A sample of profiles over the API: counters and first-seen time."""
    problems: list[str] = []
    rng = random.Random(seed)
    names = rng.sample(sorted(expected.visitors), min(SAMPLE_PROFILES, len(expected.visitors)))
    headers = {"Authorization": f"Bearer {token}"}
    for name in names:
        events, sessions, first_seen = expected.visitors[name]
        status, profile = http_json("GET", f"{base}/profile/{name}", headers=headers)
        if status != 200:
            problems.append(f"profile {name}: {status}")
            continue
        stats, times = profile["stats"], profile["metadata"]["time"]
        seen = datetime.fromisoformat(times["insert"])
        if (stats["events"], stats["visits"], seen) != (events, sessions, first_seen):
            problems.append(
                f"profile {name}: events {stats['events']}, visits {stats['visits']}, first "
                f"seen {seen}; expected {events}, {sessions}, {first_seen}"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tessera-import-bench-") as temp:
        work = Path(temp)
        file = work / "history.jsonl"
        began = time.monotonic()
        expected = generate(file, opts.events, opts.events_per_visitor, opts.seed)
        console.print(
            f"generated {expected.events:,} events of {len(expected.visitors):,} visitors in "
            f"{expected.sessions:,} sessions, {file.stat().st_size / 2**20:,.0f} MiB, over "
            f"{len(expected.by_month)} months ({time.monotonic() - began:.0f} s)"
        )
        with run_core.run_place(opts, opts.mode) as place:
            env = place.server_env() if place is not None else {}
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            password = "bench-" + run_core.secrets.token_urlsafe(12)
            command = [sys.executable, "-m", "tessera", "serve", "--port", str(port)]
            with run_core.running_server(command, work, password, env) as server:
                run_core.wait_healthy(base, server)
                token = get_token(base, password)
                source = admin_post(
                    base, token, "/event-source", {"name": "History", "trust": "server"}
                )
                measured = run_import(file, base, source["id"], source["key"], opts.time_limit)
                console.print(
                    f"[bold]{opts.mode}[/bold]: {measured.imported:,} events sent in "
                    f"{measured.send_s:,.0f} s = [bold]{measured.rate:,.0f} events/s[/bold] "
                    f"(+ {measured.plan_s:,.0f} s checking and sorting); "
                    + ("finished" if measured.finished else "[red]stopped before the end[/red]")
                )
                if not measured.finished:
                    console.print("\n".join(measured.output[-5:]))
                    return 1
                if place is not None:
                    stored = stored_distributed(opts.elastic_url.rstrip("/"), place.prefix)
                else:
                    stored = stored_embedded(work / "data")
                problems = check(expected, stored)
                problems += check_sample(base, token, expected, opts.seed)
        for problem in problems:
            console.print(f"[red]{problem}[/red]")
        if not problems:
            console.print(
                f"verified: events in {len(expected.by_month)} month partitions, "
                f"{len(expected.visitors):,} profiles, {expected.sessions:,} sessions, "
                f"{min(SAMPLE_PROFILES, len(expected.visitors))} profiles' counters and "
                "first-seen times"
            )
        if opts.record:
            stamp = datetime.now(UTC).strftime("%Y-%m-%d")
            console.print(
                f"| {stamp} | {opts.mode} | {expected.events:,} | {len(expected.visitors):,} | "
                f"{expected.sessions:,} | {measured.plan_s:,.0f} s | {measured.send_s:,.0f} s | "
                f"{measured.rate:,.0f} | {'ok' if not problems else 'FAILED'} |"
            )
        return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        console.print(f"[red]{error}[/red]")
        sys.exit(2)
