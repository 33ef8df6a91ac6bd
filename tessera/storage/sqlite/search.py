"""Searching the embedded store: the condition becomes SQL over the JSON documents."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

from tessera.errors import InvalidPayload
from tessera.query import to_sqlite
from tessera.storage.ports import SearchPage
from tessera.storage.search import Cursor, SearchRequest, json_path
from tessera.storage.sqlite.readers import ReaderPool

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

    def query(connection: sqlite3.Connection) -> tuple[int, list[tuple[str, float, str]]]:
        total = connection.execute(count_sql, count_params).fetchone()[0]
        rows = connection.execute(page_sql, page_params).fetchall()
        return int(total), rows

    total, rows = await readers.run(query)
    next_cursor = None
    if request.sort is None and rows and len(rows) == request.limit:
        last = rows[-1]
        next_cursor = Cursor(moment=last[1], id=last[2]).encode()
    return SearchPage(total=total, items=[decode(row[0]) for row in rows], next_cursor=next_cursor)
