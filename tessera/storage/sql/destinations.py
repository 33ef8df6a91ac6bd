"""Destinations, their outbox and the delivery attempts, on SQLAlchemy Core.

Destinations are configuration documents (``document_table``). The outbox keeps one row per
message with the columns the worker and the API search by; ``outbox_due`` serves the claim query
(pending messages by due time), the other indexes the per-tenant listings. Claiming is a
conditional UPDATE that stamps a fresh lease token and moves ``due`` to the lease's end, so two
workers (or processes) never take the same message at once, and a lease whose worker died simply
becomes due again. Attempts are kept in their own table, appended, never changed.

All tables are on the configuration ``metadata``: ``SqlSchemaStore.create_schema`` creates them
once this module has been imported (tessera/storage/factory.py does).
"""

from __future__ import annotations

import builtins
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.model.common import from_epoch
from tessera.model.destination import (
    MESSAGE_STATES,
    DeliveryAttempt,
    DeliveryOutcome,
    Destination,
    OutboxMessage,
)
from tessera.storage.sql.documents import SqlDocumentStore, document_table
from tessera.storage.sql.outage import begin, connect
from tessera.storage.sql.tables import metadata
from tessera.storage.sql.upsert import insert_new

destinations = document_table("destinations")

outbox = sa.Table(
    "outbox",
    metadata,
    # Ids are time-ordered UUIDs, unique across tenants; every query still names the tenant.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("destination_id", sa.String(128), nullable=False),
    # UTC epoch seconds, double precision, like every configuration time.
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("due", sa.Double, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("body", sa.JSON, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("event_id", sa.String(64), nullable=True),
    sa.Column("profile_id", sa.String(64), nullable=True),
    sa.Column("lease", sa.String(32), nullable=True),
    # The mark of the request that made the message (released by its commit).
    sa.Column("request", sa.String(32), nullable=True),
    sa.Index("outbox_due", "state", "due"),
    sa.Index("outbox_by_request", "tenant", "request"),
    sa.Index("outbox_by_state", "tenant", "state", "created"),
    sa.Index("outbox_by_destination", "tenant", "destination_id", "created"),
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("message_id", sa.String(64), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("time", sa.Double, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_ms", sa.Double, nullable=False),
    sa.Index("delivery_attempts_by_message", "tenant", "message_id", "seq"),
)

# The longest error text kept per message and attempt: enough to see why, never a whole page.
MAX_ERROR_LENGTH = 1000


def sql_destination_store(engine: AsyncEngine) -> SqlDocumentStore[Destination]:
    return SqlDocumentStore(engine, destinations, Destination)


def _clip(text: str | None) -> str | None:
    return text[:MAX_ERROR_LENGTH] if text is not None else None


def _message(row: Any) -> OutboxMessage:
    return OutboxMessage(
        tenant=row.tenant,
        id=row.id,
        destination_id=row.destination_id,
        created=from_epoch(row.created),
        due=from_epoch(row.due),
        attempts=row.attempts,
        state=row.state,
        body=row.body,
        last_error=row.last_error,
        last_status=row.last_status,
        event_id=row.event_id,
        profile_id=row.profile_id,
        lease=row.lease,
        request=row.request,
    )


def _row(message: OutboxMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "tenant": message.tenant,
        "destination_id": message.destination_id,
        "created": message.created.timestamp(),
        "due": message.due.timestamp(),
        "attempts": message.attempts,
        "state": message.state,
        "body": message.body,
        "last_error": _clip(message.last_error),
        "last_status": message.last_status,
        "event_id": message.event_id,
        "profile_id": message.profile_id,
        "lease": message.lease,
        "request": message.request,
    }


class SqlOutboxStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, messages: builtins.list[OutboxMessage]) -> None:
        if not messages:
            return
        async with begin(self._engine) as connection:
            await insert_new(connection, outbox, [_row(message) for message in messages])

    async def release(self, tenant: str, request: str, now: datetime) -> int:
        async with begin(self._engine) as connection:
            released = await connection.execute(
                outbox.update()
                .where(
                    outbox.c.tenant == tenant,
                    outbox.c.request == request,
                    outbox.c.state == "held",
                )
                .values(state="pending", due=now.timestamp())
            )
        return int(released.rowcount or 0)

    async def held(self, before: datetime, *, limit: int) -> builtins.list[OutboxMessage]:
        async with connect(self._engine) as connection:
            rows = await connection.execute(
                sa.select(outbox)
                .where(outbox.c.state == "held", outbox.c.created < before.timestamp())
                .order_by(outbox.c.created, outbox.c.id)
                .limit(limit)
            )
            return [_message(row) for row in rows]

    async def drop_held(self, tenant: str, request: str) -> int:
        async with begin(self._engine) as connection:
            dropped = await connection.execute(
                outbox.delete().where(
                    outbox.c.tenant == tenant,
                    outbox.c.request == request,
                    outbox.c.state == "held",
                )
            )
        return int(dropped.rowcount or 0)

    async def get(self, tenant: str, message_id: str) -> OutboxMessage | None:
        async with connect(self._engine) as connection:
            row = (
                await connection.execute(
                    sa.select(outbox).where(outbox.c.tenant == tenant, outbox.c.id == message_id)
                )
            ).first()
        return _message(row) if row is not None else None

    async def claim_due(
        self, now: datetime, *, limit: int, lease_s: float
    ) -> builtins.list[OutboxMessage]:
        if limit <= 0:
            return []
        lease = secrets.token_hex(16)
        moment = now.timestamp()
        due = (outbox.c.state == "pending") & (outbox.c.due <= moment)
        async with begin(self._engine) as connection:
            candidates = (
                sa.select(outbox.c.id).where(due).order_by(outbox.c.due, outbox.c.id).limit(limit)
            )
            ids = list((await connection.execute(candidates)).scalars())
            if not ids:
                return []
            # The UPDATE checks "due" again: a message another worker leased between the
            # SELECT and here has a due time in the future by now and is not taken twice.
            await connection.execute(
                outbox.update()
                .where(outbox.c.id.in_(ids), due)
                .values(due=moment + lease_s, lease=lease)
            )
            rows = await connection.execute(sa.select(outbox).where(outbox.c.lease == lease))
            claimed = [_message(row) for row in rows]
        # In the order they were due (their due times are all the lease's end now).
        order = {message_id: index for index, message_id in enumerate(ids)}
        return sorted(claimed, key=lambda message: order[message.id])

    async def record_attempt(
        self, message: OutboxMessage, attempt: DeliveryAttempt, outcome: DeliveryOutcome
    ) -> bool:
        values: dict[str, Any] = {
            "attempts": outbox.c.attempts + 1,
            "state": outcome.state,
            "last_status": attempt.status,
            "last_error": _clip(attempt.error),
            "lease": None,
        }
        if outcome.due is not None:
            values["due"] = outcome.due.timestamp()
        async with begin(self._engine) as connection:
            await connection.execute(
                delivery_attempts.insert().values(
                    tenant=attempt.tenant,
                    message_id=attempt.message_id,
                    number=attempt.number,
                    time=attempt.time.timestamp(),
                    status=attempt.status,
                    error=_clip(attempt.error),
                    duration_ms=attempt.duration_ms,
                )
            )
            updated = await connection.execute(
                outbox.update()
                .where(
                    outbox.c.tenant == message.tenant,
                    outbox.c.id == message.id,
                    outbox.c.lease == message.lease,
                )
                .values(**values)
            )
        return bool(updated.rowcount)

    async def dead_letters(
        self, tenant: str, *, limit: int, offset: int = 0
    ) -> tuple[builtins.list[OutboxMessage], int]:
        dead = (outbox.c.tenant == tenant) & (outbox.c.state == "dead")
        async with connect(self._engine) as connection:
            total = await connection.scalar(sa.select(sa.func.count()).where(dead))
            rows = await connection.execute(
                sa.select(outbox)
                .where(dead)
                .order_by(outbox.c.created.desc(), outbox.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return [_message(row) for row in rows], int(total or 0)

    async def replay(self, tenant: str, message_id: str, now: datetime) -> OutboxMessage | None:
        async with begin(self._engine) as connection:
            updated = await connection.execute(
                outbox.update()
                .where(
                    outbox.c.tenant == tenant,
                    outbox.c.id == message_id,
                    outbox.c.state == "dead",
                )
                .values(state="pending", due=now.timestamp(), attempts=0, lease=None)
            )
        if not updated.rowcount:
            return None
        return await self.get(tenant, message_id)

    async def recent(
        self, tenant: str, destination_id: str, *, limit: int
    ) -> builtins.list[OutboxMessage]:
        async with connect(self._engine) as connection:
            rows = await connection.execute(
                sa.select(outbox)
                .where(outbox.c.tenant == tenant, outbox.c.destination_id == destination_id)
                .order_by(outbox.c.created.desc(), outbox.c.id.desc())
                .limit(limit)
            )
            return [_message(row) for row in rows]

    async def attempts(self, tenant: str, message_id: str) -> builtins.list[DeliveryAttempt]:
        table = delivery_attempts
        async with connect(self._engine) as connection:
            rows = await connection.execute(
                sa.select(table)
                .where(table.c.tenant == tenant, table.c.message_id == message_id)
                .order_by(table.c.seq)
            )
            return [
                DeliveryAttempt(
                    tenant=row.tenant,
                    message_id=row.message_id,
                    number=row.number,
                    time=from_epoch(row.time),
                    status=row.status,
                    error=row.error,
                    duration_ms=row.duration_ms,
                )
                for row in rows
            ]

    async def counts(self, tenant: str, destination_id: str | None = None) -> dict[str, int]:
        query = (
            sa.select(outbox.c.state, sa.func.count())
            .where(outbox.c.tenant == tenant)
            .group_by(outbox.c.state)
        )
        if destination_id is not None:
            query = query.where(outbox.c.destination_id == destination_id)
        counts: dict[str, int] = dict.fromkeys(MESSAGE_STATES, 0)
        async with connect(self._engine) as connection:
            for state, count in await connection.execute(query):
                counts[state] = int(count)
        return counts
