"""The embedded ingest log's writer: one thread, one ``synchronous=FULL`` connection, group commit.

Hundreds of concurrent requests each publishing one message must not each wait for their own
fsync. Publishers queue their rows and wait on a future; the thread takes everything that has
queued up (while it was committing the previous group), writes it in one transaction, commits,
and wakes every publisher of that group with one call per event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from tessera.errors import TesseraError
from tessera.queue.embedded import log as queue_log
from tessera.queue.ports import QueueUnavailable
from tessera.storage.private_files import private_data_dir
from tessera.storage.sqlite.connection import open_connection
from tessera.storage.sqlite.grouping import STOP, Stop, iter_groups, start_connection_thread

log = logging.getLogger(__name__)

# Rows per transaction at most, so one group's commit never grows without bound under a flood.
MAX_GROUP_ROWS = 20_000

Row = tuple[int, str, bytes, float]


@dataclass(slots=True)
class _Pending:
    rows: list[Row]
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


def _row_count(pending: _Pending) -> int:
    return len(pending.rows)


class LogPublisher:
    def __init__(self, path: Path, partitions: int) -> None:
        self._path = path
        self._partitions = partitions
        self._queue: queue.SimpleQueue[_Pending | Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.commits = 0

    def start(self) -> None:
        """Open the log (creating its tables) on the writer thread; blocks until it is ready."""
        thread, failure = start_connection_thread(
            "tessera-queue-writer",
            connect=self._open,
            serve=self._serve,
            # Whatever stops the log from opening is reported here, never lost in a thread.
            opening_errors=Exception,
        )
        if failure is not None:
            thread.join()
            if isinstance(failure, TesseraError):
                raise failure
            raise QueueUnavailable(f"cannot open the embedded queue {self._path}: {failure}")
        self._thread = thread

    def stop(self) -> None:
        """Commit what is queued, then end the thread; nothing happens the second time."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(STOP)
        thread.join()

    def submit(self, rows: list[Row]) -> asyncio.Future[None]:
        """Queue rows for the next group; the future is done once they are committed."""
        if self._thread is None:
            raise QueueUnavailable("the embedded queue is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Pending(rows, future, loop))
        return future

    def _open(self) -> sqlite3.Connection:
        private_data_dir(self._path.parent)
        connection = open_connection(self._path, synchronous="FULL", read_only=False)
        try:
            queue_log.prepare(connection, self._partitions)
        except BaseException:
            connection.close()
            raise
        return connection

    def _serve(self, connection: sqlite3.Connection) -> None:
        for group in iter_groups(self._queue, size_of=_row_count, limit=MAX_GROUP_ROWS):
            self._write(connection, group)

    def _write(self, connection: sqlite3.Connection, group: list[_Pending]) -> None:
        error: QueueUnavailable | None = None
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                queue_log.INSERT_MESSAGE, [row for item in group for row in item.rows]
            )
            connection.execute("COMMIT")
            self.commits += 1
        # The thread serves every publisher: it reports the failure to this group and goes on.
        except Exception as exc:  # noqa: BLE001
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            log.error("embedded queue commit failed: %s", exc)
            error = QueueUnavailable(f"the embedded queue could not commit: {exc}")
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for item in group:
            by_loop.setdefault(item.loop, []).append(item.future)
        for loop, futures in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, futures, error)
            except RuntimeError:
                log.warning("a publisher's event loop closed before its commit was acknowledged")


def _settle(futures: list[asyncio.Future[None]], error: QueueUnavailable | None) -> None:
    for future in futures:
        if future.done():  # the publisher gave up waiting (timeout, client went away)
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
