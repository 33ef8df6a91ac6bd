"""Event processing rules on SQLAlchemy Core.

One table holds all three kinds. Each rule is kept whole as a JSON document; the columns beside
it (kind, event type, enabled, created) are copies used to find and order rules, indexed as the
ingest path asks: by (tenant, kind, event type). The table is defined on the configuration
``metadata``, so ``SqlSchemaStore.create_schema`` creates it with the others once this module has
been imported.
"""

from __future__ import annotations

import builtins

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.model.processing import RULE_KINDS, ProcessingRule
from tessera.storage.processing_ports import R
from tessera.storage.sql.outage import begin, connect
from tessera.storage.sql.tables import metadata

processing_rules = sa.Table(
    "processing_rules",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("event_type", sa.String(255), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    # UTC epoch seconds, double precision, like every configuration time.
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Index("processing_rules_by_type", "tenant", "kind", "event_type"),
)


class SqlProcessingRuleStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, tenant: str, kind: type[R], rule_id: str) -> R | None:
        async with connect(self._engine) as connection:
            document = await connection.scalar(
                sa.select(processing_rules.c.document).where(
                    processing_rules.c.tenant == tenant,
                    processing_rules.c.kind == kind.kind,
                    processing_rules.c.id == rule_id,
                )
            )
        return msgspec.convert(document, kind) if document is not None else None

    async def save(self, rule: ProcessingRule) -> None:
        values = {
            "event_type": rule.event_type,
            "enabled": rule.enabled,
            "created": rule.created.timestamp(),
            "document": msgspec.to_builtins(rule),
        }
        key = (
            (processing_rules.c.tenant == rule.tenant)
            & (processing_rules.c.kind == rule.kind)
            & (processing_rules.c.id == rule.id)
        )
        async with begin(self._engine) as connection:
            updated = await connection.execute(processing_rules.update().where(key).values(values))
            if updated.rowcount == 0:
                await connection.execute(
                    processing_rules.insert().values(
                        tenant=rule.tenant, kind=rule.kind, id=rule.id, **values
                    )
                )

    async def delete(self, tenant: str, kind: type[ProcessingRule], rule_id: str) -> bool:
        async with begin(self._engine) as connection:
            result = await connection.execute(
                processing_rules.delete().where(
                    processing_rules.c.tenant == tenant,
                    processing_rules.c.kind == kind.kind,
                    processing_rules.c.id == rule_id,
                )
            )
        return bool(result.rowcount)

    async def for_event_type(self, tenant: str, event_type: str) -> builtins.list[ProcessingRule]:
        async with connect(self._engine) as connection:
            result = await connection.execute(
                sa.select(processing_rules.c.kind, processing_rules.c.document)
                .where(
                    processing_rules.c.tenant == tenant,
                    # Every kind named, so the (tenant, kind, event_type) index serves the query.
                    processing_rules.c.kind.in_(list(RULE_KINDS)),
                    processing_rules.c.event_type == event_type,
                    processing_rules.c.enabled.is_(True),
                )
                .order_by(processing_rules.c.created, processing_rules.c.id)
            )
            return [msgspec.convert(row.document, RULE_KINDS[row.kind]) for row in result]

    async def list(
        self, tenant: str, kind: type[R], *, event_type: str | None = None
    ) -> builtins.list[R]:
        query = sa.select(processing_rules.c.document).where(
            processing_rules.c.tenant == tenant, processing_rules.c.kind == kind.kind
        )
        if event_type is not None:
            query = query.where(processing_rules.c.event_type == event_type)
        async with connect(self._engine) as connection:
            result = await connection.execute(
                query.order_by(processing_rules.c.created, processing_rules.c.id)
            )
            return [msgspec.convert(document, kind) for document in result.scalars()]
