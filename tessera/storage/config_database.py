"""Which database keeps the configuration: the embedded SQLite file, or MySQL/MariaDB when
``MYSQL_HOST`` is set. The storage factory calls ``config_engine`` and ``config_schema_store``;
every configuration store (tessera/storage/sql) then works on either engine unchanged.

The embedded file keeps creating its schema from the table definitions (``create_all``): it
belongs to one installation on one machine and is created by the code that uses it. A server
database is shared and outlives deployments, so Alembic owns its schema (``tessera migrate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.settings import Settings, secret_value
from tessera.storage.extras import MYSQL, require
from tessera.storage.sql import all_tables  # noqa: F401  (every table on the metadata)
from tessera.storage.sql.engine import CONFIG_FILE_NAME, sqlite_engine
from tessera.storage.sql.stores import SqlSchemaStore

if TYPE_CHECKING:
    from tessera.storage.mysql.migrate import OnStep

# storage/mysql (asyncmy, Alembic) is imported only when MYSQL_HOST chooses it (extras.py).


def uses_mysql(settings: Settings) -> bool:
    return bool(settings.mysql_host)


def config_engine(settings: Settings, *, migrating: bool = False) -> AsyncEngine:
    """The configuration store's engine: pooled MySQL/MariaDB, or the embedded SQLite file.
    ``migrating``: for Alembic, without the read timeout a request gets."""
    if uses_mysql(settings):
        require(MYSQL)
        from tessera.storage.mysql.engine import mysql_engine

        return mysql_engine(settings, migrating=migrating)
    return sqlite_engine(settings.data_dir)


def config_schema_store(engine: AsyncEngine, settings: Settings) -> SqlSchemaStore:
    """The SchemaStore (and SharedValues) for ``engine``, made by ``config_engine(settings)``."""
    if uses_mysql(settings):
        require(MYSQL)
        from tessera.storage.mysql.engine import describe_server, mysql_engine
        from tessera.storage.mysql.schema import MigratedSchemaStore

        return MigratedSchemaStore(
            engine,
            where=describe_server(settings),
            secret=secret_value(settings.mysql_password),
            migration_engine=lambda: mysql_engine(settings, migrating=True),
        )
    return SqlSchemaStore(engine)


def describe_config_database(settings: Settings) -> str:
    if uses_mysql(settings):
        from tessera.storage.mysql.engine import describe_server

        return describe_server(settings)
    return f"embedded SQLite file {settings.data_dir / CONFIG_FILE_NAME}"


@dataclass(frozen=True, slots=True)
class MigrationReport:
    where: str
    migrated: bool  # False: the embedded file, whose schema is created, not migrated
    before: str | None  # the revision before (None: an empty database)
    head: str | None
    applied: tuple[str, ...]


async def migrate_config_database(
    settings: Settings, on_step: OnStep | None = None
) -> MigrationReport:
    """``tessera migrate``: bring the configured database's schema to what this code needs."""
    where = describe_config_database(settings)
    engine = config_engine(settings)
    try:
        store = config_schema_store(engine, settings)
        if not uses_mysql(settings):
            await store.create_schema()
            return MigrationReport(where, migrated=False, before=None, head=None, applied=())
        from tessera.storage.mysql.schema import MigratedSchemaStore

        assert isinstance(store, MigratedSchemaStore)
        before = await store.migrate(on_step)
        return MigrationReport(
            where, migrated=True, before=before.current, head=before.head, applied=before.pending
        )
    finally:
        await engine.dispose()


async def check_config_database(settings: Settings) -> None:
    """Before serving: the server database answers and its schema fits this code (an empty
    one is fine: the first start creates it). Raises StorageUnavailable or ConfigurationError
    with a message naming ``MYSQL_HOST``; the embedded file needs no check."""
    if not uses_mysql(settings):
        return
    engine = config_engine(settings)
    try:
        from tessera.storage.mysql.schema import MigratedSchemaStore

        store = config_schema_store(engine, settings)
        assert isinstance(store, MigratedSchemaStore)
        await store.check()
    finally:
        await engine.dispose()
