"""Configuration tables. Every row carries its tenant. Times are UTC epoch seconds as
double-precision numbers (a single-precision FLOAT would round them to minutes on MySQL)."""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 1

metadata = sa.MetaData()

schema_meta = sa.Table(
    "schema_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

event_sources = sa.Table(
    "event_sources",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    # Added by revision 0004 (nullable: rows from before are public sources without a key).
    sa.Column("trust", sa.String(16), nullable=True),
    sa.Column("key", sa.String(128), nullable=True),
    sa.Column("public_merge", sa.Boolean, nullable=True),
)

# Ids of erased profiles: never taken again for a new profile (docs/security.md).
erased_profiles = sa.Table(
    "erased_profiles",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("erased", sa.Double, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("email", sa.String(255), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("roles", sa.JSON, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.UniqueConstraint("tenant", "email", name="users_email_per_tenant"),
)

access_tokens = sa.Table(
    "access_tokens",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("expires", sa.Double, nullable=False, index=True),
    sa.Column("revoked", sa.Boolean, nullable=False),
)
