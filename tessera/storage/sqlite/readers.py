"""Reader threads for the embedded store, each with its own read-only SQLite connection, so
reads run beside the writer (WAL lets them) and never block the event loop.

Like the writer, readers work in groups: a reader thread takes every query that has queued up
(up to ``MAX_GROUP``), runs them, and wakes all their callers with one call into the event
loop. Under load that turns thousands of thread hand-offs per second into a few hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tessera.errors import StorageUnavailable
from tessera.storage.sqlite.connection import open_connection
from tessera.storage.sqlite.grouping import STOP, Stop, iter_groups

R = TypeVar("R")

MAX_GROUP = 64


@dataclass(slots=True)
class _Query:
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _one_query(_: _Query) -> int:
    return 1


class ReaderPool:
    def __init__(self, path: Path, *, size: int, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._size = size
        self._queue: queue.SimpleQueue[_Query | Stop] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Every reader's connection, so that close() can interrupt what they run.
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, query: Callable[[sqlite3.Connection], R]) -> R:
        if self._closed:
            raise StorageUnavailable("the event store is closed")
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put(_Query(query, future, loop))
        return await future

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            for index in range(self._size):
                thread = threading.Thread(
                    target=self._serve, name=f"tessera-reader-{index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            for group in iter_groups(self._queue, size_of=_one_query, limit=MAX_GROUP):
                if connection is None:
                    connection = self._open_or_fail(group)
                    if connection is not None:
                        with self._lock:
                            self._connections.append(connection)
                if connection is not None:
                    self._answer(connection, group)
        finally:
            if connection is not None:
                connection.close()

    def _open_or_fail(self, group: list[_Query]) -> sqlite3.Connection | None:
        try:
            return open_connection(self._path, synchronous=self._synchronous, read_only=True)
        except sqlite3.Error as exc:
            error = StorageUnavailable(f"cannot open the event store for reading: {exc}")
            self._deliver([(item, None, error) for item in group])
            return None

    def _answer(self, connection: sqlite3.Connection, group: list[_Query]) -> None:
        outcomes: list[tuple[_Query, Any, BaseException | None]] = []
        for item in group:
            try:
                outcomes.append((item, item.run(connection), None))
            except sqlite3.Error as exc:
                failure = StorageUnavailable(f"the event store read failed: {exc}")
                outcomes.append((item, None, failure))
            except Exception as exc:  # noqa: BLE001 - handed to the caller, as an executor does
                outcomes.append((item, None, exc))
        self._deliver(outcomes)

    @staticmethod
    def _deliver(outcomes: list[tuple[_Query, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Query, Any, BaseException | None]]]
        by_loop = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, items in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting for these answers any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            threads, self._threads = self._threads, []
            connections, self._connections = self._connections, []
        # A long read (a search) must not hold the shutdown: interrupt what is running.
        for connection in connections:
            connection.interrupt()
        for _ in threads:
            self._queue.put(STOP)
        for thread in threads:
            thread.join()


def _settle(items: list[tuple[_Query, Any, BaseException | None]]) -> None:
    for query, result, error in items:
        if query.future.done():  # the caller was cancelled
            continue
        if error is None:
            query.future.set_result(result)
        else:
            query.future.set_exception(error)
