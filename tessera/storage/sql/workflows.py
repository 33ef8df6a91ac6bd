"""Rules, workflows and the schedule of delayed workflow steps in the configuration store.

Rules and workflows are documents (``documents.py``). The schedule is a real table because it is
queried by due time: ``claim_due`` leases due rows (``leased_until``) in one transaction so that
two runners, in one process or several, never take the same step; a runner that dies leaves a
lease that runs out, and the step is due again.
"""

from __future__ import annotations

import builtins
from datetime import datetime

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.model.workflow import Rule, Workflow
from tessera.storage.automation_ports import ScheduledStep
from tessera.storage.sql.documents import SqlDocumentStore, document_table
from tessera.storage.sql.outage import begin, connect
from tessera.storage.sql.tables import metadata
from tessera.storage.sql.upsert import insert_new

rules = document_table("rules")
workflows = document_table("workflows")

scheduled_steps = sa.Table(
    "scheduled_steps",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("due", sa.Double, nullable=False),
    sa.Column("leased_until", sa.Double, nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),
    # The mark of the request that scheduled the step (released by its commit).
    sa.Column("request", sa.String(32), nullable=True),
    sa.Index("scheduled_steps_due", "leased_until", "due"),
    sa.Index("scheduled_steps_by_request", "tenant", "request"),
)

# A held step's lease: it runs out long after anyone will be around (never, in practice), so
# claim_due does not take the step until ``release`` sets it to 0.
HELD_UNTIL = 1e15


def rule_store(engine: AsyncEngine) -> SqlDocumentStore[Rule]:
    return SqlDocumentStore(engine, rules, Rule)


def workflow_store(engine: AsyncEngine) -> SqlDocumentStore[Workflow]:
    return SqlDocumentStore(engine, workflows, Workflow)


class SqlScheduleStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, steps: builtins.list[ScheduledStep], *, held: bool = False) -> None:
        if not steps:
            return
        async with begin(self._engine) as connection:
            await insert_new(
                connection,
                scheduled_steps,
                [
                    {
                        "tenant": step.tenant,
                        "id": step.id,
                        "due": step.due.timestamp(),
                        "leased_until": HELD_UNTIL if held else 0.0,
                        "doc": msgspec.to_builtins(step),
                        "request": step.request,
                    }
                    for step in steps
                ],
            )

    async def release(self, tenant: str, request: str) -> int:
        table = scheduled_steps
        async with begin(self._engine) as connection:
            released = await connection.execute(
                table.update()
                .where(
                    table.c.tenant == tenant,
                    table.c.request == request,
                    table.c.leased_until == HELD_UNTIL,
                )
                .values(leased_until=0.0)
            )
        return int(released.rowcount or 0)

    async def held(self, before: datetime, *, limit: int) -> builtins.list[ScheduledStep]:
        table = scheduled_steps
        async with connect(self._engine) as connection:
            rows = await connection.execute(
                sa.select(table.c.doc)
                .where(table.c.leased_until == HELD_UNTIL)
                .order_by(table.c.due)
                .limit(limit)
            )
            steps = [msgspec.convert(row.doc, ScheduledStep) for row in rows]
        # Few rows are ever held for long (only after a crash): filtered here, not indexed.
        return sorted((s for s in steps if s.created < before), key=lambda s: s.created)

    async def drop_held(self, tenant: str, request: str) -> int:
        table = scheduled_steps
        async with begin(self._engine) as connection:
            dropped = await connection.execute(
                table.delete().where(
                    table.c.tenant == tenant,
                    table.c.request == request,
                    table.c.leased_until == HELD_UNTIL,
                )
            )
        return int(dropped.rowcount or 0)

    async def claim_due(
        self, now: datetime, *, limit: int, lease_s: float
    ) -> builtins.list[ScheduledStep]:
        moment = now.timestamp()
        table = scheduled_steps
        async with begin(self._engine) as connection:
            rows = (
                await connection.execute(
                    sa.select(table.c.tenant, table.c.id, table.c.doc)
                    .where(table.c.due <= moment, table.c.leased_until <= moment)
                    .order_by(table.c.due)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            claimed: builtins.list[ScheduledStep] = []
            for row in rows:
                # Only the runner whose update still sees the old lease gets the step.
                taken = await connection.execute(
                    table.update()
                    .where(
                        table.c.tenant == row.tenant,
                        table.c.id == row.id,
                        table.c.leased_until <= moment,
                    )
                    .values(leased_until=moment + lease_s)
                )
                if taken.rowcount:
                    step = msgspec.convert(row.doc, ScheduledStep)
                    step.attempts += 1
                    claimed.append(step)
            for step in claimed:
                await connection.execute(
                    table.update()
                    .where(table.c.tenant == step.tenant, table.c.id == step.id)
                    .values(doc=msgspec.to_builtins(step))
                )
        return claimed

    async def done(self, tenant: str, step_id: str) -> None:
        async with begin(self._engine) as connection:
            await connection.execute(
                scheduled_steps.delete().where(
                    scheduled_steps.c.tenant == tenant, scheduled_steps.c.id == step_id
                )
            )

    async def pending(self, tenant: str) -> builtins.list[ScheduledStep]:
        async with connect(self._engine) as connection:
            result = await connection.execute(
                sa.select(scheduled_steps.c.doc)
                .where(scheduled_steps.c.tenant == tenant)
                .order_by(scheduled_steps.c.due)
            )
            return [msgspec.convert(doc, ScheduledStep) for doc in result.scalars()]
