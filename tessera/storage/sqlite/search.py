"""Searching the embedded store: the condition becomes SQL over the JSON documents.

A search can be long (a large condition over many documents), and it runs on a reader thread
the event loop cannot stop. So SQLite itself is told to stop it, through a progress handler
that SQLite calls every few thousand instructions: once the request's ``timeout_s`` has
passed (SearchTimedOut, 503), or as soon as the request awaiting it is cancelled (a client that
went away, a server shutting down), the query is interrupted and the reader is free again.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tessera.errors import InvalidPayload
from tessera.query import to_sqlite
from tessera.storage.ports import SearchPage
from tessera.storage.search import Cursor, SearchRequest, json_path, timed_out
from tessera.storage.sqlite.readers import ReaderPool

# SQLite virtual machine instructions between two looks at the clock (about a millisecond).
PROGRESS_STEPS = 10_000

R = TypeVar("R")

# Which column holds each searchable table's "newest first" moment.
TABLES = {"profiles": ("profile", "updated"), "events": ("event", "time")}


async def search(
    readers: ReaderPool,
    table: str,
    tenant: str,
    request: SearchRequest,
    decode: Callable[[str], R],
) -> SearchPage[R]:
    entity, moment = TABLES[table]
    where = ["tenant = ?"]
    params: list[object] = [tenant]
    if request.condition is not None:
        fragment, values = to_sqlite(request.condition, entity)
        where.append(fragment)
        params += values
    count_sql = f"SELECT count(*) FROM {table} WHERE {' AND '.join(where)}"  # noqa: S608
    count_params = list(params)
    if request.sort is not None:
        if request.cursor is not None:
            raise InvalidPayload("cursor: pages with a cursor follow the default order only")
        direction = "DESC" if request.sort.descending else "ASC"
        order = f"json_extract(doc, ?) {direction}, id {direction}"
        order_params: list[object] = [json_path(request.sort.path)]
    else:
        if request.cursor is not None:
            where.append(f"({moment} < ? OR ({moment} = ? AND id < ?))")
            params += [request.cursor.moment, request.cursor.moment, request.cursor.id]
        order = f"{moment} DESC, id DESC"
        order_params = []
    page_sql = (
        f"SELECT doc, {moment}, id FROM {table} WHERE {' AND '.join(where)}"  # noqa: S608
        f" ORDER BY {order} LIMIT ? OFFSET ?"
    )
    page_params = [*params, *order_params, request.limit, request.offset]

    stop = threading.Event()
    timeout_s = request.timeout_s

    def query(connection: sqlite3.Connection) -> tuple[int, list[tuple[str, float, str]]]:
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None

        def stop_now() -> int:
            late = deadline is not None and time.monotonic() > deadline
            return 1 if late or stop.is_set() else 0

        connection.set_progress_handler(stop_now, PROGRESS_STEPS)
        try:
            total = connection.execute(count_sql, count_params).fetchone()[0]
            rows = connection.execute(page_sql, page_params).fetchall()
        except sqlite3.OperationalError as exc:
            if timeout_s is not None and deadline is not None and time.monotonic() > deadline:
                raise timed_out(timeout_s) from exc
            raise
        finally:
            connection.set_progress_handler(None, 0)
        return int(total), rows

    try:
        total, rows = await readers.run(query)
    except asyncio.CancelledError:
        stop.set()  # nobody waits for the answer any more: free the reader
        raise
    next_cursor = None
    if request.sort is None and rows and len(rows) == request.limit:
        last = rows[-1]
        next_cursor = Cursor(moment=last[1], id=last[2]).encode()
    return SearchPage(total=total, items=[decode(row[0]) for row in rows], next_cursor=next_cursor)
