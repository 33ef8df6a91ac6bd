"""The plan and checkpoint of one `tessera import`: a SQLite file beside the imported file.

The file is read once, every line checked (a bad line stops the import before anything is
sent, naming the line) and stored in the order it will be sent: by visitor, then by time, so
a profile's events reach the server in time order and in whole runs. The import then sends
the plan in chunks and, after each chunk the server acknowledged, records how far it got, in
the same transaction as the running totals. An interrupted import (Ctrl-C, a crash, SIGKILL)
starts again after the last acknowledged chunk; the chunk that was on its way is sent again,
and the server, which keeps each event id once, counts it as duplicates.

Chunks are cut the same way every time (the limits are kept in the checkpoint), so a chunk
sent again is the same chunk, making the same ingest batches with the same apply-once marks
(pipeline/history.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tessera.collect.history_lines import decode_line

# Lines per insert transaction while the plan is built.
INSERT_BATCH = 10_000


class CheckpointMismatch(Exception):
    """The checkpoint belongs to another file, or to another version of this one."""


@dataclass(slots=True)
class Chunk:
    """Plan rows ``first``..``last`` (positions), with each line's number in the file."""

    first: int
    last: int
    lines: list[int]
    body: bytes


@dataclass(slots=True)
class Totals:
    stored: int = 0
    duplicates: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    def add(self, answer: dict[str, object]) -> None:
        self.stored += _count(answer.get("stored"))
        self.duplicates += _count(answer.get("duplicates"))
        refused = answer.get("refused")
        if isinstance(refused, dict):
            for reason, count in refused.items():
                self.refused[str(reason)] += _count(count)


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


class Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")

    def close(self) -> None:
        self._db.close()

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    @property
    def planned(self) -> bool:
        return self._meta("total") is not None

    def check_same_file(self, source: Path) -> None:
        if self._meta("fingerprint") != _fingerprint(source):
            raise CheckpointMismatch(
                f"{self.path} was made for another version of {source} (its size or time "
                "changed): pass --restart to import it from the start"
            )

    def plan(
        self,
        source: Path,
        *,
        max_depth: int,
        chunk_lines: int,
        chunk_bytes: int,
        progress: Callable[[int], None],
    ) -> int:
        """Read and check every line of ``source``; the number of events planned. The chunk
        limits are kept with the plan: a resumed import cuts the same chunks."""
        self._db.execute("DROP TABLE IF EXISTS temp.staging")
        self._db.execute("DROP TABLE IF EXISTS plan")
        # The unsorted copy is a temporary table: only the sorted plan stays in the file.
        self._db.execute(
            "CREATE TEMP TABLE staging (visitor TEXT, moment REAL, line INTEGER, body BLOB)"
        )
        rows: list[tuple[str, float, int, bytes]] = []
        with source.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                body = raw.rstrip(b"\r\n")
                if not body.strip():
                    continue
                event = decode_line(body, number, max_depth=max_depth)
                moment = event.event.time
                rows.append(
                    (event.visitor, 0.0 if moment is None else moment.timestamp(), number, body)
                )
                if len(rows) == INSERT_BATCH:
                    self._db.executemany("INSERT INTO staging VALUES (?, ?, ?, ?)", rows)
                    progress(len(rows))
                    rows.clear()
        self._db.executemany("INSERT INTO staging VALUES (?, ?, ?, ?)", rows)
        progress(len(rows))
        # The plan's rowid is the position of the line in sending order.
        self._db.execute(
            "CREATE TABLE plan AS SELECT line, body FROM staging ORDER BY visitor, moment, line"
        )
        self._db.execute("DROP TABLE temp.staging")
        total = int(self._db.execute("SELECT count(*) FROM plan").fetchone()[0])
        self._set("fingerprint", _fingerprint(source))
        self._set("done", "0")
        self._set("totals", json.dumps({"stored": 0, "duplicates": 0, "refused": {}}))
        self._set("chunk_lines", str(chunk_lines))
        self._set("chunk_bytes", str(chunk_bytes))
        self._set("total", str(total))
        self._db.commit()
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return total

    @property
    def total(self) -> int:
        return int(self._meta("total") or 0)

    @property
    def done(self) -> int:
        return int(self._meta("done") or 0)

    def totals(self) -> Totals:
        saved = json.loads(self._meta("totals") or "{}")
        totals = Totals()
        totals.add(saved)
        return totals

    def chunks(self) -> Iterator[Chunk]:
        """The chunks still to send, in order, each within the plan's limits of lines and
        bytes (a single longer line goes alone; the server judges it)."""
        max_lines = int(self._meta("chunk_lines") or 1)
        max_bytes = int(self._meta("chunk_bytes") or 1)
        cursor = self._db.execute(
            "SELECT rowid, line, body FROM plan WHERE rowid > ? ORDER BY rowid", (self.done,)
        )
        lines: list[int] = []
        parts: list[bytes] = []
        size = 0
        first = self.done + 1
        for position, line, body in cursor:
            if parts and (len(parts) == max_lines or size + len(body) + 1 > max_bytes):
                yield Chunk(first, position - 1, lines, b"\n".join(parts))
                lines, parts, size, first = [], [], 0, position
            lines.append(int(line))
            parts.append(bytes(body))
            size += len(body) + 1
        if parts:
            yield Chunk(first, first + len(parts) - 1, lines, b"\n".join(parts))

    def acknowledge(self, chunk: Chunk, totals: Totals) -> None:
        self._set("done", str(chunk.last))
        self._set(
            "totals",
            json.dumps(
                {
                    "stored": totals.stored,
                    "duplicates": totals.duplicates,
                    "refused": dict(totals.refused),
                }
            ),
        )
        self._db.commit()


def _fingerprint(source: Path) -> str:
    stat = os.stat(source)
    return f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
