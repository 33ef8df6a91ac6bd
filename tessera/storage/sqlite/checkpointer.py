"""Moving the write-ahead log into the database file, away from the writer.

SQLite normally checkpoints inside the commit that crosses its threshold, and a checkpoint
syncs the database file: every request waiting on that commit would wait for the sync too.
The writer's connection turns automatic checkpoints off and this thread runs passive
checkpoints on a timer instead; a passive checkpoint never blocks the writer.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from tessera.storage.sqlite.connection import open_connection

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, path: Path, *, interval_s: float, synchronous: str) -> None:
        self._path = path
        self._interval_s = interval_s
        self._synchronous = synchronous
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="tessera-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer, then fold the whole log into the database and truncate it."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._checkpoint("TRUNCATE")

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._checkpoint("PASSIVE")

    def _checkpoint(self, mode: str) -> None:
        try:
            connection = open_connection(self._path, synchronous=self._synchronous, read_only=False)
            try:
                connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                self.checkpoints += 1
            finally:
                connection.close()
        except sqlite3.Error as exc:
            # A checkpoint that fails (e.g. the disk is full) loses nothing: the log keeps the
            # data and the next checkpoint tries again.
            log.warning("checkpoint of %s failed: %s", self._path, exc)
