"""Configuration documents of one kind (rules, workflows, segments, destinations) kept whole as
JSON beside their key, on SQLAlchemy Core: one table per kind, one implementation for all.

``document_table("rules")`` defines a table on the configuration ``metadata`` (so
``SqlSchemaStore.create_schema`` creates it once the defining module is imported);
``SqlDocumentStore(engine, table, Rule)`` implements ``DocumentStore[Rule]`` over it. The
``created`` column orders listings oldest first, as every other configuration list does.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.storage.sql.outage import begin, connect
from tessera.storage.sql.tables import metadata


class _Document(Protocol):
    tenant: str
    id: str
    created: datetime


D = TypeVar("D", bound=_Document)


def document_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        # UTC epoch seconds, double precision, like every configuration time.
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("doc", sa.JSON, nullable=False),
    )


class SqlDocumentStore(Generic[D]):
    def __init__(self, engine: AsyncEngine, table: sa.Table, kind: type[D]) -> None:
        self._engine = engine
        self._table = table
        self._kind = kind

    def _decode(self, document: Any) -> D:
        return msgspec.convert(document, self._kind)

    async def get(self, tenant: str, item_id: str) -> D | None:
        table = self._table
        async with connect(self._engine) as connection:
            document = await connection.scalar(
                sa.select(table.c.doc).where(table.c.tenant == tenant, table.c.id == item_id)
            )
        return self._decode(document) if document is not None else None

    async def list(self, tenant: str) -> builtins.list[D]:
        table = self._table
        async with connect(self._engine) as connection:
            result = await connection.execute(
                sa.select(table.c.doc)
                .where(table.c.tenant == tenant)
                .order_by(table.c.created, table.c.id)
            )
            return [self._decode(document) for document in result.scalars()]

    async def save(self, item: D) -> None:
        table = self._table
        document = msgspec.to_builtins(item)
        key = (table.c.tenant == item.tenant) & (table.c.id == item.id)
        async with begin(self._engine) as connection:
            updated = await connection.execute(table.update().where(key).values(doc=document))
            if updated.rowcount == 0:
                await connection.execute(
                    table.insert().values(
                        tenant=item.tenant,
                        id=item.id,
                        created=item.created.timestamp(),
                        doc=document,
                    )
                )

    async def delete(self, tenant: str, item_id: str) -> bool:
        table = self._table
        async with begin(self._engine) as connection:
            result = await connection.execute(
                table.delete().where(table.c.tenant == tenant, table.c.id == item_id)
            )
        return bool(result.rowcount)
