"""Threads that serve queued work in groups over a connection of their own.

The embedded store's writer, its readers and the ingest log's writer each run one thread that
takes whatever has queued up and handles it at once: one transaction or one wake-up of the
event loop then serves many callers. This module holds what they share: taking a group from
the queue, the sentinel that ends such a thread, and starting a thread whose connection is
opened (and closed) on the thread itself.
"""

from __future__ import annotations

import enum
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final, TypeVar

T = TypeVar("T")


class Stop(enum.Enum):
    """A single-member enum, so the type checker tells the sentinel apart from work items."""

    STOP = enum.auto()


# Queued after the last work item: what came before it is still handled, then the thread ends.
STOP: Final = Stop.STOP


def take_group(
    source: queue.SimpleQueue[T | Stop],
    *,
    size_of: Callable[[T], int],
    limit: int,
    flush_interval_s: float = 0.0,
) -> tuple[list[T], bool]:
    """Wait for one item, then take more while the group's size is below ``limit``.

    Without a flush interval only what is already queued joins the group; with one, the group
    waits for more until ``flush_interval_s`` after its first item. Returns the group and
    whether ``STOP`` was taken (nothing queued after it is taken).
    """
    first = source.get()
    if first is STOP:
        return [], True
    group = [first]
    size = size_of(first)
    deadline = time.monotonic() + flush_interval_s
    while size < limit:
        try:
            item = source.get_nowait()
        except queue.Empty:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = source.get(timeout=remaining)
            except queue.Empty:
                break
        if item is STOP:
            return group, True
        group.append(item)
        size += size_of(item)
    return group, False


def iter_groups(
    source: queue.SimpleQueue[T | Stop],
    *,
    size_of: Callable[[T], int],
    limit: int,
    flush_interval_s: float = 0.0,
) -> Iterator[list[T]]:
    """Yield groups (see ``take_group``) until ``STOP``, including a group taken along with it."""
    while True:
        group, stop = take_group(
            source, size_of=size_of, limit=limit, flush_interval_s=flush_interval_s
        )
        if group:
            yield group
        if stop:
            return


def start_connection_thread(
    name: str,
    *,
    connect: Callable[[], sqlite3.Connection],
    serve: Callable[[sqlite3.Connection], None],
    opening_errors: type[Exception] | tuple[type[Exception], ...],
) -> tuple[threading.Thread, Exception | None]:
    """Start a daemon thread that opens its connection, serves with it and closes it.

    Blocks until the connection is open or opening it failed with one of ``opening_errors``;
    that failure is returned (the thread has then ended) so the caller can raise it.
    """
    ready = threading.Event()
    failure: list[Exception] = []

    def run() -> None:
        try:
            connection = connect()
        except opening_errors as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            serve(connection)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait()
    return thread, failure[0] if failure else None
