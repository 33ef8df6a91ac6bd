"""The workflows' key-value memory on SQLAlchemy Core: values with an expiry time.

An expired value is never answered (reads compare the expiry with ``now``); ``purge_expired``
removes expired rows in bulk so the table does not grow with dead keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.storage.sql.outage import begin, connect
from tessera.storage.sql.tables import metadata
from tessera.storage.sql.upsert import save_row

kv_memory = sa.Table(
    "kv_memory",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", sa.JSON, nullable=True),
    # UTC epoch seconds; NULL: kept until deleted.
    sa.Column("expires", sa.Double, nullable=True, index=True),
)


class SqlKeyValueStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, tenant: str, key: str, now: datetime) -> Any | None:
        async with connect(self._engine) as connection:
            row = (
                await connection.execute(
                    sa.select(kv_memory.c.value, kv_memory.c.expires).where(
                        kv_memory.c.tenant == tenant, kv_memory.c.key == key
                    )
                )
            ).first()
        if row is None or (row.expires is not None and row.expires <= now.timestamp()):
            return None
        return row.value

    async def set(
        self, tenant: str, key: str, value: Any, *, ttl_s: float | None, now: datetime
    ) -> None:
        expires = now.timestamp() + ttl_s if ttl_s is not None else None
        async with begin(self._engine) as connection:
            # Workflows of concurrent events often set the same new key: save_row is safe then.
            await save_row(
                connection,
                kv_memory,
                key={"tenant": tenant, "key": key},
                values={"value": value, "expires": expires},
            )

    async def delete(self, tenant: str, key: str) -> bool:
        async with begin(self._engine) as connection:
            result = await connection.execute(
                kv_memory.delete().where(kv_memory.c.tenant == tenant, kv_memory.c.key == key)
            )
        return bool(result.rowcount)

    async def purge_expired(self, now: datetime) -> int:
        async with begin(self._engine) as connection:
            result = await connection.execute(
                kv_memory.delete().where(kv_memory.c.expires <= now.timestamp())
            )
        return int(result.rowcount or 0)
