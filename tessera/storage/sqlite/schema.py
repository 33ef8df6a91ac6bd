"""Tables of the embedded event store. Every row carries its tenant."""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1

STATEMENTS = (
    """CREATE TABLE IF NOT EXISTS store_meta (
        key TEXT PRIMARY KEY, value TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS profiles (
        tenant TEXT NOT NULL, id TEXT NOT NULL, updated REAL NOT NULL, doc TEXT NOT NULL,
        PRIMARY KEY (tenant, id)
    ) WITHOUT ROWID""",
    # Ids that resolve to another profile (ids of merged profiles), beside each profile's own.
    """CREATE TABLE IF NOT EXISTS profile_aliases (
        tenant TEXT NOT NULL, alias TEXT NOT NULL, profile_id TEXT NOT NULL,
        PRIMARY KEY (tenant, alias)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS aliases_by_profile ON profile_aliases (tenant, profile_id)",
    """CREATE TABLE IF NOT EXISTS sessions (
        tenant TEXT NOT NULL, id TEXT NOT NULL, profile_id TEXT, updated REAL NOT NULL,
        doc TEXT NOT NULL, PRIMARY KEY (tenant, id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS sessions_by_profile ON sessions (tenant, profile_id)",
    # A rowid table: rows are appended in arrival order, which keeps inserts cheap.
    """CREATE TABLE IF NOT EXISTS events (
        tenant TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, time REAL NOT NULL,
        inserted REAL NOT NULL, profile_id TEXT, session_id TEXT, source_id TEXT NOT NULL,
        doc TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events (tenant, id)",
    # Salted hashes of merge-key values → the profile that holds the value.
    """CREATE TABLE IF NOT EXISTS identities (
        tenant TEXT NOT NULL, digest TEXT NOT NULL, profile_id TEXT NOT NULL,
        PRIMARY KEY (tenant, digest)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS identities_by_profile ON identities (tenant, profile_id)",
    # Profiles merged into another, as they were, so an unmerge can bring them back.
    """CREATE TABLE IF NOT EXISTS retired_profiles (
        tenant TEXT NOT NULL, id TEXT NOT NULL, survivor_id TEXT NOT NULL, doc TEXT NOT NULL,
        PRIMARY KEY (tenant, id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS events_by_profile ON events (tenant, profile_id, time)",
)


def create_schema(connection: sqlite3.Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in STATEMENTS:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO store_meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO NOTHING",
            (str(SCHEMA_VERSION),),
        )
    except sqlite3.Error:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def installed_version(connection: sqlite3.Connection) -> int | None:
    try:
        row = connection.execute(
            "SELECT value FROM store_meta WHERE key = 'schema_version'"
        ).fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row else None
