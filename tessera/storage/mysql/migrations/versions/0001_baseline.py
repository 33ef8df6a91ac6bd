"""The configuration schema as of issue 5: every table the stores in tessera/storage/sql use.

Text compares exactly on MySQL/MariaDB, as on SQLite: ids, keys and e-mails are looked up with
``=``, and the servers' default ``utf8mb4`` collations would treat ``Key`` and ``key`` (and
``a`` and ``a ``) as equal, merging rows SQLite keeps apart. So every table is created with a
binary, no-pad collation. Other dialects ignore the ``mysql_*`` options.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA_VERSION = "1"


def _exact_text(dialect: sa.Dialect) -> str:
    """The binary, no-pad utf8mb4 collation of this server: MariaDB and MySQL name it apart."""
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


def _document_table(name: str) -> None:
    _table(
        name,
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("doc", sa.JSON, nullable=False),
    )


def upgrade() -> None:
    _table(
        "schema_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    op.bulk_insert(
        sa.table("schema_meta", sa.column("key"), sa.column("value")),
        [{"key": "schema_version", "value": SCHEMA_VERSION}],
    )
    _table(
        "event_sources",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
    )
    _table(
        "users",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("roles", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.UniqueConstraint("tenant", "email", name="users_email_per_tenant"),
    )
    _table(
        "access_tokens",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("expires", sa.Double, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
    )
    op.create_index("ix_access_tokens_expires", "access_tokens", ["expires"])
    _table(
        "consent_types",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("doc", sa.JSON, nullable=False),
    )
    _table(
        "processing_rules",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
    )
    op.create_index(
        "processing_rules_by_type", "processing_rules", ["tenant", "kind", "event_type"]
    )
    for name in ("rules", "workflows", "segments", "destinations"):
        _document_table(name)
    _table(
        "scheduled_steps",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("due", sa.Double, nullable=False),
        sa.Column("leased_until", sa.Double, nullable=False),
        sa.Column("doc", sa.JSON, nullable=False),
    )
    op.create_index("scheduled_steps_due", "scheduled_steps", ["leased_until", "due"])
    _table(
        "outbox",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("destination_id", sa.String(128), nullable=False),
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
    )
    op.create_index("outbox_due", "outbox", ["state", "due"])
    op.create_index("outbox_by_state", "outbox", ["tenant", "state", "created"])
    op.create_index("outbox_by_destination", "outbox", ["tenant", "destination_id", "created"])
    _table(
        "delivery_attempts",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("duration_ms", sa.Double, nullable=False),
    )
    op.create_index(
        "delivery_attempts_by_message", "delivery_attempts", ["tenant", "message_id", "seq"]
    )
    _table(
        "kv_memory",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.JSON, nullable=True),
        sa.Column("expires", sa.Double, nullable=True),
    )
    op.create_index("ix_kv_memory_expires", "kv_memory", ["expires"])


def downgrade() -> None:
    for name in (
        "kv_memory",
        "delivery_attempts",
        "outbox",
        "scheduled_steps",
        "destinations",
        "segments",
        "workflows",
        "rules",
        "processing_rules",
        "consent_types",
        "access_tokens",
        "users",
        "event_sources",
        "schema_meta",
    ):
        op.drop_table(name)
