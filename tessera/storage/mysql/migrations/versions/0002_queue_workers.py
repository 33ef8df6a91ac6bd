"""Issue 6, queue workers: their dead letters and their heartbeats.

Like every table, these are created with a binary, no-pad collation on MySQL/MariaDB (see
0001). The helpers are repeated here rather than imported: a revision must keep doing what it
did when it shipped, whatever later revisions change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-06-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _exact_text(dialect: sa.Dialect) -> str:
    if getattr(dialect, "is_mariadb", False):
        return "utf8mb4_nopad_bin"
    version = dialect.server_version_info or (0,)
    return "utf8mb4_0900_bin" if tuple(version) >= (8, 0, 17) else "utf8mb4_bin"


def _table(name: str, *items: Any) -> None:
    dialect = op.get_bind().dialect
    options: dict[str, Any] = {}
    if dialect.name == "mysql":
        options = {
            "mysql_engine": "InnoDB",
            "mysql_charset": "utf8mb4",
            "mysql_collate": _exact_text(dialect),
        }
    op.create_table(name, *items, **options)


def upgrade() -> None:
    _table(
        "queue_dead_letters",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        # A plain BLOB stops at 64 KB on MySQL; a message body can be far larger.
        sa.Column(
            "body",
            sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
    )
    op.create_index("queue_dead_letters_by_created", "queue_dead_letters", ["tenant", "created"])
    _table(
        "queue_workers",
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
    )
    op.create_index("queue_workers_by_seen", "queue_workers", ["seen"])


def downgrade() -> None:
    op.drop_table("queue_workers")
    op.drop_table("queue_dead_letters")
