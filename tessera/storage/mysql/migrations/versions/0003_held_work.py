"""Issue 11, apply once: the outbox and the schedule of delayed steps remember the request that
made each row, so the row can be kept *held* before that request's records are committed and
released by the commit (tessera/workflow/held_work.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("request", sa.String(32), nullable=True))
    op.create_index("outbox_by_request", "outbox", ["tenant", "request"])
    op.add_column("scheduled_steps", sa.Column("request", sa.String(32), nullable=True))
    op.create_index("scheduled_steps_by_request", "scheduled_steps", ["tenant", "request"])


def downgrade() -> None:
    op.drop_index("scheduled_steps_by_request", table_name="scheduled_steps")
    op.drop_column("scheduled_steps", "request")
    op.drop_index("outbox_by_request", table_name="outbox")
    op.drop_column("outbox", "request")
