"""Insert-or-replace one row by its key, safe when two writers create the same key at once.

On SQLite an UPDATE followed, when it matched nothing, by an INSERT is race-free: the UPDATE
takes the database's write lock, so a second writer waits and then finds the row. On
MySQL/MariaDB (READ COMMITTED) an UPDATE that matches nothing locks nothing: two writers can
both miss the row and both insert, and one fails on the duplicate key. There one atomic
``INSERT … ON DUPLICATE KEY UPDATE`` does the same job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection


async def save_row(
    connection: AsyncConnection,
    table: sa.Table,
    *,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    on_insert: Mapping[str, Any] | None = None,
) -> None:
    """Set ``values`` on the row with ``key``; a new row also gets ``on_insert`` (e.g. the
    creation time, which a later save must not change)."""
    row = {**key, **values, **(on_insert or {})}
    if connection.dialect.name == "mysql":
        statement = mysql_insert(table).values(row)
        await connection.execute(
            statement.on_duplicate_key_update({name: statement.inserted[name] for name in values})
        )
        return
    where = sa.and_(*(table.c[name] == value for name, value in key.items()))
    updated = await connection.execute(table.update().where(where).values(dict(values)))
    if updated.rowcount == 0:
        await connection.execute(table.insert().values(row))


async def insert_new(
    connection: AsyncConnection, table: sa.Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert ``rows``; one whose key is taken already is left as it is (records named from
    what made them are kept again by a retry, and must not change or fail it)."""
    if not rows:
        return
    if connection.dialect.name == "mysql":
        statement = mysql_insert(table)
        # A no-op update on a duplicate key (INSERT IGNORE would hide other errors too).
        key = next(iter(table.primary_key.columns)).name
        await connection.execute(
            statement.on_duplicate_key_update({key: statement.inserted[key]}), list(rows)
        )
        return
    await connection.execute(sqlite_insert(table).on_conflict_do_nothing(), list(rows))
