"""Opening the embedded store's SQLite connections with the pragmas they need."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tessera.storage.private_files import keep_private

# Large enough that a burst of writes rarely waits on another connection's checkpoint.
BUSY_TIMEOUT_MS = 10_000


def open_connection(path: Path, *, synchronous: str, read_only: bool) -> sqlite3.Connection:
    # isolation_level=None: transactions are begun and ended explicitly by the writer.
    # check_same_thread=False only so shutdown can close a reader's connection after its
    # thread ended; while running, each connection is used by the one thread that opened it.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # Opening created the file if it was missing, with SQLite's default mode; before anything
    # is written (its -wal and -shm files take the file's mode), it becomes the owner's alone.
    keep_private(path)
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA temp_store=MEMORY")
    connection.execute("PRAGMA cache_size=-65536")
    if read_only:
        connection.execute("PRAGMA query_only=1")
    return connection
