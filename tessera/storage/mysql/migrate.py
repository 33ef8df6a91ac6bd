"""Running the configuration schema's Alembic migrations on an async engine.

Alembic is driven from code, not from an ini file: the script location is this package's
``migrations`` folder and the connection is handed to ``env.py`` through the config's
attributes. ``schema_state`` tells where a database stands against the code (empty, at head,
behind, or at a revision this code does not know); ``upgrade`` brings it to head. On MySQL and
MariaDB the upgrade holds a named server lock, so two processes starting on an empty database
at once do not both create the tables: the second waits, then finds the schema at head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.errors import StorageUnavailable
from tessera.storage.sql.tables import schema_meta

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LOCK_NAME = "tessera_schema_migrations"
LOCK_WAIT_S = 60

# Called after each applied revision with its id and message (progress output).
OnStep = Callable[[str, str], None]


class _IgnoredKeyName(logging.Filter):
    """asyncmy logs every server note as a warning; MariaDB notes that it ignores the name
    Alembic gives alembic_version's primary key. Harmless, and not worth alarming anyone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "ignored for PRIMARY key" not in record.getMessage()


logging.getLogger("asyncmy").addFilter(_IgnoredKeyName())


def alembic_config(location: Path = MIGRATIONS_DIR) -> Config:
    """Alembic's config for the migrations in ``location`` (another folder only in tests)."""
    config = Config()
    config.set_main_option("script_location", str(location))
    return config


def scripts(location: Path = MIGRATIONS_DIR) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(location))


def head_revision(location: Path = MIGRATIONS_DIR) -> str:
    head = scripts(location).get_current_head()
    if head is None:  # pragma: no cover - the baseline revision ships with the code
        raise RuntimeError("the configuration schema has no migration")
    return head


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a database's schema stands against the migrations this code ships."""

    current: str | None  # the database's revision (alembic_version); None: never migrated
    head: str
    has_tessera_tables: bool  # schema_meta exists (with or without migration history)
    pending: tuple[str, ...]  # revisions an upgrade would apply, oldest first

    @property
    def empty(self) -> bool:
        return self.current is None and not self.has_tessera_tables

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def known(self) -> bool:
        """False when the database is at a revision this code does not have (newer code ran)."""
        return self.current is None or self.current == self.head or bool(self.pending)


def _state(connection: Connection, location: Path) -> SchemaState:
    directory = scripts(location)
    head = head_revision(location)
    current = MigrationContext.configure(connection).get_current_revision()
    has_tables = sa.inspect(connection).has_table(schema_meta.name)
    pending: tuple[str, ...] = ()
    if current != head:
        try:
            steps = directory.iterate_revisions(head, current)
            pending = tuple(reversed([step.revision for step in steps]))
        except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown revision
            pending = ()
    return SchemaState(current=current, head=head, has_tessera_tables=has_tables, pending=pending)


async def schema_state(engine: AsyncEngine, location: Path = MIGRATIONS_DIR) -> SchemaState:
    async with engine.connect() as connection:
        return await connection.run_sync(_state, location)


def _upgrade(connection: Connection, location: Path, on_step: OnStep | None) -> None:
    locked = connection.dialect.name == "mysql"
    if locked:
        got = connection.scalar(
            sa.text("SELECT GET_LOCK(:name, :wait)"), {"name": LOCK_NAME, "wait": LOCK_WAIT_S}
        )
        if got != 1:
            raise StorageUnavailable(
                f"another process has held the schema migration lock for {LOCK_WAIT_S} s; "
                "try again when it has finished"
            )
        # Named locks belong to the session, not the transaction: committing keeps it, and
        # leaves Alembic to open its own transaction per revision.
        connection.commit()
    try:
        config = alembic_config(location)
        config.attributes["connection"] = connection
        if on_step is not None:
            config.attributes["on_version_apply"] = _reporter(on_step)
        command.upgrade(config, "head")
        connection.commit()
    finally:
        if locked:
            connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})


def _reporter(on_step: OnStep) -> Callable[..., None]:
    def report(*, step: Any, **_: Any) -> None:
        revision = step.up_revision
        on_step(str(revision.revision), str(revision.doc or ""))

    return report


async def upgrade(
    engine: AsyncEngine, on_step: OnStep | None = None, location: Path = MIGRATIONS_DIR
) -> None:
    """Apply every pending revision (none: nothing happens)."""
    async with engine.connect() as connection:
        await connection.run_sync(_upgrade, location, on_step)
