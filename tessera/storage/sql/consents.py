"""Consent types in the configuration store."""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.model.consent import ConsentType
from tessera.storage.sql.outage import begin, connect
from tessera.storage.sql.tables import metadata

consent_types = sa.Table(
    "consent_types",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("doc", sa.JSON, nullable=False),
)

_to_builtins = msgspec.to_builtins


def _from_row(row: sa.Row[Any]) -> ConsentType:
    return msgspec.convert(row.doc, ConsentType)


class SqlConsentTypeStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, tenant: str, consent_id: str) -> ConsentType | None:
        async with connect(self._engine) as connection:
            result = await connection.execute(
                sa.select(consent_types).where(
                    consent_types.c.tenant == tenant, consent_types.c.id == consent_id
                )
            )
            row = result.first()
        return _from_row(row) if row is not None else None

    async def list(self, tenant: str) -> list[ConsentType]:
        async with connect(self._engine) as connection:
            result = await connection.execute(
                sa.select(consent_types)
                .where(consent_types.c.tenant == tenant)
                .order_by(consent_types.c.id)
            )
            return [_from_row(row) for row in result]

    async def save(self, consent: ConsentType) -> None:
        document = _to_builtins(consent)
        key = (consent_types.c.tenant == consent.tenant) & (consent_types.c.id == consent.id)
        async with begin(self._engine) as connection:
            updated = await connection.execute(
                consent_types.update().where(key).values(doc=document)
            )
            if updated.rowcount == 0:
                await connection.execute(
                    consent_types.insert().values(
                        tenant=consent.tenant, id=consent.id, doc=document
                    )
                )

    async def delete(self, tenant: str, consent_id: str) -> bool:
        async with begin(self._engine) as connection:
            result = await connection.execute(
                consent_types.delete().where(
                    consent_types.c.tenant == tenant, consent_types.c.id == consent_id
                )
            )
        return bool(result.rowcount)
