"""Queue dead letters and worker heartbeats in the configuration database, on SQLAlchemy Core.

A dead letter keeps the message's raw body as bytes, exactly as the queue delivered it, so a
replay publishes the very same message. Bodies may be large (a batch of events), and MySQL's
plain BLOB stops at 64 KB, so there the column is a LONGBLOB. Worker rows are replaced on every
beat; rows of workers not seen for a long time are purged across tenants, hence the index on
``seen`` alone.

Times are UTC epoch seconds as doubles, like every configuration time. The tables are on the
configuration ``metadata`` (see all_tables.py); migration 0002 creates them on a server database.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.model.common import from_epoch
from tessera.storage.sql.outage import begin, connect
from tessera.storage.sql.tables import metadata
from tessera.storage.sql.upsert import save_row
from tessera.storage.worker_ports import DeadLetter, WorkerBeat

# MySQL's TEXT holds 65,535 bytes: this many characters fit even when every one takes four.
MAX_ERROR_LENGTH = 16_000

queue_dead_letters = sa.Table(
    "queue_dead_letters",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column(
        "body",
        sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
        nullable=False,
    ),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.Index("queue_dead_letters_by_created", "tenant", "created"),
)

queue_workers = sa.Table(
    "queue_workers",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("worker_id", sa.String(128), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started", sa.Double, nullable=False),
    sa.Column("seen", sa.Double, nullable=False),
    sa.Column("messages", sa.BigInteger, nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("retries", sa.BigInteger, nullable=False),
    sa.Column("dead_letters", sa.BigInteger, nullable=False),
    sa.Column("rate", sa.Double, nullable=False),
    sa.Column("partitions", sa.JSON, nullable=False),
    sa.Index("queue_workers_by_seen", "seen"),
)


def _seconds(moment: datetime) -> float:
    # A naive datetime would be read as local time by timestamp(): refuse it instead.
    if moment.tzinfo is None:
        raise ValueError("worker record times must be timezone-aware (UTC)")
    return moment.timestamp()


def _letter(row: Any) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        tenant=row.tenant,
        topic=row.topic,
        partition=row.partition,
        key=row.key,
        position=row.position,
        body=bytes(row.body),
        error=row.error,
        attempts=row.attempts,
        created=from_epoch(row.created),
    )


def _beat(row: Any) -> WorkerBeat:
    return WorkerBeat(
        worker_id=row.worker_id,
        tenant=row.tenant,
        host=row.host,
        pid=row.pid,
        started=from_epoch(row.started),
        seen=from_epoch(row.seen),
        messages=row.messages,
        events=row.events,
        retries=row.retries,
        dead_letters=row.dead_letters,
        rate=row.rate,
        partitions=[int(partition) for partition in row.partitions],
    )


class SqlDeadLetterStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, letter: DeadLetter) -> None:
        async with begin(self._engine) as connection:
            await connection.execute(
                queue_dead_letters.insert().values(
                    tenant=letter.tenant,
                    id=letter.id,
                    topic=letter.topic,
                    partition=letter.partition,
                    key=letter.key,
                    position=letter.position,
                    body=letter.body,
                    error=letter.error[:MAX_ERROR_LENGTH],
                    attempts=letter.attempts,
                    created=_seconds(letter.created),
                )
            )

    async def get(self, tenant: str, letter_id: str) -> DeadLetter | None:
        table = queue_dead_letters
        async with connect(self._engine) as connection:
            row = (
                await connection.execute(
                    sa.select(table).where(table.c.tenant == tenant, table.c.id == letter_id)
                )
            ).first()
        return _letter(row) if row is not None else None

    async def list(
        self, tenant: str, *, limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[DeadLetter], int]:
        table = queue_dead_letters
        async with connect(self._engine) as connection:
            total = await connection.scalar(
                sa.select(sa.func.count()).select_from(table).where(table.c.tenant == tenant)
            )
            rows = await connection.execute(
                sa.select(table)
                .where(table.c.tenant == tenant)
                .order_by(table.c.created.desc(), table.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return [_letter(row) for row in rows], int(total or 0)

    async def delete(self, tenant: str, letter_id: str) -> bool:
        table = queue_dead_letters
        async with begin(self._engine) as connection:
            deleted = await connection.execute(
                table.delete().where(table.c.tenant == tenant, table.c.id == letter_id)
            )
        return bool(deleted.rowcount)

    async def count(self, tenant: str) -> int:
        table = queue_dead_letters
        async with connect(self._engine) as connection:
            total = await connection.scalar(
                sa.select(sa.func.count()).select_from(table).where(table.c.tenant == tenant)
            )
        return int(total or 0)


class SqlWorkerBeats:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def beat(self, beat: WorkerBeat) -> None:
        async with begin(self._engine) as connection:
            await save_row(
                connection,
                queue_workers,
                key={"tenant": beat.tenant, "worker_id": beat.worker_id},
                values={
                    "host": beat.host,
                    "pid": beat.pid,
                    "started": _seconds(beat.started),
                    "seen": _seconds(beat.seen),
                    "messages": beat.messages,
                    "events": beat.events,
                    "retries": beat.retries,
                    "dead_letters": beat.dead_letters,
                    "rate": beat.rate,
                    "partitions": builtins.list(beat.partitions),
                },
            )

    async def live(self, tenant: str, since: datetime) -> builtins.list[WorkerBeat]:
        table = queue_workers
        async with connect(self._engine) as connection:
            rows = await connection.execute(
                sa.select(table)
                .where(table.c.tenant == tenant, table.c.seen >= _seconds(since))
                .order_by(table.c.worker_id)
            )
            return [_beat(row) for row in rows]

    async def forget(self, tenant: str, worker_id: str) -> None:
        table = queue_workers
        async with begin(self._engine) as connection:
            await connection.execute(
                table.delete().where(table.c.tenant == tenant, table.c.worker_id == worker_id)
            )

    async def purge(self, before: datetime) -> int:
        table = queue_workers
        async with begin(self._engine) as connection:
            purged = await connection.execute(table.delete().where(table.c.seen < _seconds(before)))
        return int(purged.rowcount or 0)
