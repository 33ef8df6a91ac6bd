"""Issue 12, the trust model: event sources are public or server (with a key, and whether a
public identify may merge), and the ids of erased profiles are kept so that they are never
taken again for a new profile.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _exact_text(dialect: sa.Dialect) -> str:
    if getattr(dialect, "is_mariadb", False):
        return "utf8mb4_nopad_bin"
    version = dialect.server_version_info or (0,)
    return "utf8mb4_0900_bin" if tuple(version) >= (8, 0, 17) else "utf8mb4_bin"


def upgrade() -> None:
    op.add_column("event_sources", sa.Column("trust", sa.String(16), nullable=True))
    op.add_column("event_sources", sa.Column("key", sa.String(128), nullable=True))
    op.add_column("event_sources", sa.Column("public_merge", sa.Boolean, nullable=True))
    dialect = op.get_bind().dialect
    options: dict[str, Any] = {}
    if dialect.name == "mysql":
        options = {
            "mysql_engine": "InnoDB",
            "mysql_charset": "utf8mb4",
            "mysql_collate": _exact_text(dialect),
        }
    op.create_table(
        "erased_profiles",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("erased", sa.Double, nullable=False),
        **options,
    )


def downgrade() -> None:
    op.drop_table("erased_profiles")
    op.drop_column("event_sources", "public_merge")
    op.drop_column("event_sources", "key")
    op.drop_column("event_sources", "trust")
