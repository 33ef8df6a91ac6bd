"""A small pool of reader threads, each with its own read-only SQLite connection, so reads run
beside the writer (WAL lets them) and never block the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tessera.storage.sqlite.connection import open_connection

R = TypeVar("R")


class ReaderPool:
    def __init__(self, path: Path, *, size: int, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tessera-reader")

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = open_connection(self._path, synchronous=self._synchronous, read_only=True)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    async def run(self, query: Callable[[sqlite3.Connection], R]) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: query(self._connection()))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        # The reader threads have ended, so nothing else can be using these connections.
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
