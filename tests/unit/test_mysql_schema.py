"""The configuration schema on MariaDB: ``tessera migrate`` creates it and is safe to run
again, the migrations match the table definitions, text compares exactly, and start-up refuses
a schema that does not fit the code, or a server it cannot reach, with a message that says what
to do and never shows the password. Against the real MariaDB of scripts/services (skipped
loudly when it cannot be reached); the embedded SQLite file is checked alongside."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from typer.testing import CliRunner, Result

from tessera.cli import app
from tessera.errors import ConfigurationError, StorageUnavailable
from tessera.ops.install import bootstrap
from tessera.settings import load_settings
from tessera.storage.config_database import (
    config_schema_store,
    migrate_config_database,
)
from tessera.storage.factory import build_storage
from tessera.storage.mysql.engine import describe_server, mysql_engine
from tessera.storage.mysql.migrate import MIGRATIONS_DIR, SchemaState, head_revision, upgrade
from tessera.storage.mysql.schema import MigratedSchemaStore
from tessera.storage.sql.all_tables import metadata
from tessera.storage.sql.engine import sqlite_engine
from tests.support.mariadb import (
    PASSWORD,
    drop_created_databases,
    mariadb_database,
    mariadb_settings,
    require_mariadb,
)

EXTRA_REVISION = '''"""A later schema change, for the tests only.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("segments", sa.Column("test_only", sa.Integer, nullable=True))


def downgrade() -> None:
    op.drop_column("segments", "test_only")
'''


@pytest.fixture(autouse=True)
def _drop_databases() -> Iterator[None]:
    yield
    drop_created_databases()


@pytest.fixture
def newer_migrations(tmp_path: Path) -> Path:
    """The shipped migrations plus one more revision: code that is newer than the database."""
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / "0005_test_only.py").write_text(EXTRA_REVISION)
    return folder


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def table_names(connection: Connection) -> set[str]:
    return set(sa.inspect(connection).get_table_names())


# --- migrate --------------------------------------------------------------------------------


async def test_migrate_creates_the_whole_schema_and_is_safe_to_run_again(tmp_path: Path) -> None:
    async with mariadb_database(tmp_path) as database:
        first = await migrate_config_database(database.settings)
        second = await migrate_config_database(database.settings)

        async with database.engine.connect() as connection:
            tables = await connection.run_sync(table_names)
        version = await config_schema_store(database.engine, database.settings).installed_version()

    assert first.migrated is True
    assert (first.before, first.head, first.applied) == (
        None,
        head_revision(),
        ("0001", "0002", "0003", "0004"),
    )
    assert (second.before, second.applied) == (head_revision(), ())
    assert tables == set(metadata.tables) | {"alembic_version"}
    assert version == 1


async def test_the_migrated_mariadb_schema_matches_the_table_definitions(tmp_path: Path) -> None:
    async with mariadb_database(tmp_path) as database:
        await upgrade(database.engine)
        async with database.engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    assert differences == []


async def test_the_migrated_sqlite_schema_matches_the_table_definitions(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    try:
        await upgrade(engine)
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == []


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_every_text_column_compares_exactly(tmp_path: Path) -> None:
    """The database's default collation is case-insensitive (as a server's usually is); the
    migrated tables' text columns are binary and no-pad all the same."""
    async with mariadb_database(tmp_path) as database:
        await upgrade(database.engine)
        async with database.engine.connect() as connection:
            default = await connection.scalar(sa.text("SELECT @@collation_database"))
            rows = await connection.execute(
                sa.text(
                    "SELECT TABLE_NAME, COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS"
                    " WHERE TABLE_SCHEMA = DATABASE() AND DATA_TYPE IN ('varchar', 'text')"
                    " AND TABLE_NAME <> 'alembic_version'"
                )
            )
            collations = {(row[0], row[1]): row[2] for row in rows}
    assert default == "utf8mb4_unicode_ci"
    assert ("kv_memory", "key") in collations
    assert ("users", "email") in collations
    assert set(collations.values()) == {"utf8mb4_nopad_bin"}


# --- start-up ---------------------------------------------------------------------------------


async def test_start_up_creates_the_schema_of_an_empty_database(tmp_path: Path) -> None:
    async with mariadb_database(tmp_path) as database:
        store = config_schema_store(database.engine, database.settings)
        assert await store.installed_version() is None

        await store.create_schema()
        await store.create_schema()

        assert await store.installed_version() == 1
        assert isinstance(store, MigratedSchemaStore)
        assert (await store.state()).up_to_date


async def test_start_up_refuses_a_schema_older_than_the_code(
    tmp_path: Path, newer_migrations: Path
) -> None:
    async with mariadb_database(tmp_path / "db") as database:
        await upgrade(database.engine)  # the database is at 0004 ...
        where = describe_server(database.settings)
        store = MigratedSchemaStore(database.engine, where=where, migrations=newer_migrations)

        with pytest.raises(ConfigurationError) as refused:  # ... the code needs 0005
            await store.create_schema()

        assert "run `tessera migrate`" in refused.value.message
        assert "0004" in refused.value.message
        assert "0005" in refused.value.message
        assert "MYSQL_HOST=" in refused.value.message

        before = await store.migrate()
        await store.create_schema()

        assert before.pending == ("0005",)
        assert (await store.state()).current == "0005"


async def test_bootstrap_refuses_to_start_on_an_outdated_schema(
    tmp_path: Path, newer_migrations: Path
) -> None:
    """The first step of Runtime.start (bootstrap) goes through the schema store."""
    async with mariadb_database(tmp_path / "db") as database:
        await upgrade(database.engine)
        where = describe_server(database.settings)
        store = MigratedSchemaStore(database.engine, where=where, migrations=newer_migrations)
        settings = load_settings(TESSERA_DATA_DIR=str(tmp_path / "data"))
        storage = build_storage(settings)
        storage = replace(storage, config_schema=store, shared_values=store)
        try:
            with pytest.raises(ConfigurationError, match="run `tessera migrate`"):
                await bootstrap(storage, settings)
        finally:
            await storage.close()


async def test_start_up_refuses_a_schema_newer_than_the_code(tmp_path: Path) -> None:
    async with mariadb_database(tmp_path) as database:
        await upgrade(database.engine)
        async with database.engine.begin() as connection:
            await connection.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d'"))
        store = config_schema_store(database.engine, database.settings)
        assert isinstance(store, MigratedSchemaStore)

        with pytest.raises(ConfigurationError, match="upgrade Tessera") as refused:
            await store.create_schema()
        with pytest.raises(ConfigurationError, match="upgrade Tessera"):
            await store.migrate()

    assert "f00d" in refused.value.message


async def test_start_up_refuses_tables_made_without_migrations(tmp_path: Path) -> None:
    async with mariadb_database(tmp_path) as database:
        async with database.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        store = config_schema_store(database.engine, database.settings)

        with pytest.raises(ConfigurationError, match="no migration history"):
            await store.create_schema()


async def test_an_unreachable_server_fails_clearly_without_the_password() -> None:
    await require_mariadb()  # the same skip as every MariaDB test, for a consistent run
    port = free_port()
    password = "Distinctive-Secret-4711"
    settings = mariadb_settings("tessera_nowhere", MYSQL_PORT=port, MYSQL_PASSWORD=password)
    engine = mysql_engine(settings)
    store = config_schema_store(engine, settings)
    try:
        with pytest.raises(StorageUnavailable) as failed:
            await store.create_schema()
        with pytest.raises(StorageUnavailable):
            await store.installed_version()
    finally:
        await engine.dispose()

    message = failed.value.message
    assert f"MYSQL_HOST=127.0.0.1:{port}" in message
    assert "Can't connect" in message
    assert password not in message


async def test_a_refused_login_fails_clearly_without_the_password(tmp_path: Path) -> None:
    async with mariadb_database(tmp_path) as database:
        password = "Wrong-Secret-0815"
        settings = mariadb_settings(database.name, MYSQL_PASSWORD=password)
        engine = mysql_engine(settings)
        try:
            with pytest.raises(StorageUnavailable) as failed:
                await config_schema_store(engine, settings).create_schema()
        finally:
            await engine.dispose()

    assert "Access denied" in failed.value.message
    assert "MYSQL_HOST=" in failed.value.message
    assert password not in failed.value.message


# --- the command line ---------------------------------------------------------------------------


def run_tessera(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command in its own process: what an operator runs."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TESSERA_", "MYSQL_"))
    }
    clean.update({"TESSERA_DATA_DIR": str(tmp_path / "data"), "TESSERA_PORT": "1", **env})
    return subprocess.run(
        [sys.executable, "-m", "tessera", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def invoke_tessera(tmp_path: Path, *args: str, **env: str) -> Result:
    """The same command in this process (quicker); the settings come from ``env`` alone."""
    cleared: dict[str, str | None] = {
        key: None for key in os.environ if key.startswith(("TESSERA_", "MYSQL_"))
    }
    cleared.update({"TESSERA_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", **env})
    return CliRunner().invoke(app, list(args), env=cleared)


def mysql_env(database: str, **overrides: str) -> dict[str, str]:
    settings = mariadb_settings(database)
    env = {
        "MYSQL_HOST": str(settings.mysql_host),
        "MYSQL_PORT": str(settings.mysql_port),
        "MYSQL_USERNAME": str(settings.mysql_username),
        "MYSQL_PASSWORD": PASSWORD,
        "MYSQL_DATABASE": database,
        "COLUMNS": "200",  # one message, one line
    }
    env.update(overrides)
    return env


def test_tessera_migrate_upgrades_once_then_has_nothing_to_do(tmp_path: Path) -> None:
    async def fresh_database() -> str:
        async with mariadb_database(tmp_path / "db") as database:
            return database.name

    async def state(name: str) -> SchemaState:
        async with mariadb_database(tmp_path / "db") as database:
            assert database.name == name
            return await MigratedSchemaStore(database.engine, where="test").state()

    name = asyncio.run(fresh_database())
    first = invoke_tessera(tmp_path, "migrate", **mysql_env(name))
    second = invoke_tessera(tmp_path, "migrate", **mysql_env(name))

    assert first.exit_code == 0, first.output
    assert "applied 0001" in first.stderr
    assert "Schema at revision 0004" in first.stderr
    assert second.exit_code == 0, second.output
    assert "already at revision 0004" in second.stderr
    assert asyncio.run(state(name)).up_to_date
    assert PASSWORD not in first.output


def test_tessera_migrate_on_the_embedded_file_creates_its_schema(tmp_path: Path) -> None:
    result = invoke_tessera(tmp_path, "migrate")
    assert result.exit_code == 0, result.output
    assert "embedded SQLite" in result.stderr
    assert (tmp_path / "data" / "config.sqlite").exists()


async def test_serve_stops_with_one_line_when_mariadb_is_unreachable(tmp_path: Path) -> None:
    await require_mariadb()
    port = str(free_port())
    password = "Distinctive-Secret-4711"
    served = run_tessera(
        tmp_path, "serve", **mysql_env("tessera_nowhere", MYSQL_PORT=port, MYSQL_PASSWORD=password)
    )

    assert served.returncode == 2
    assert f"MYSQL_HOST=127.0.0.1:{port}" in served.stderr
    assert "Cannot start" in served.stderr
    assert "Can't connect" in served.stderr
    assert "Traceback" not in served.stderr
    assert password not in served.stderr + served.stdout


def test_migrate_stops_with_one_line_when_mariadb_is_unreachable(tmp_path: Path) -> None:
    asyncio.run(require_mariadb())
    port = str(free_port())
    password = "Distinctive-Secret-4711"
    env = mysql_env("tessera_nowhere", MYSQL_PORT=port, MYSQL_PASSWORD=password)

    migrated = invoke_tessera(tmp_path, "migrate", **env)

    assert migrated.exit_code == 1
    assert f"MYSQL_HOST=127.0.0.1:{port}" in migrated.stderr
    assert "Migration failed" in migrated.stderr
    assert password not in migrated.output


def test_serve_refuses_a_schema_newer_than_the_code(tmp_path: Path) -> None:
    async def newer_database() -> str:
        async with mariadb_database(tmp_path / "db") as database:
            await upgrade(database.engine)
            async with database.engine.begin() as connection:
                await connection.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d'"))
            return database.name

    name = asyncio.run(newer_database())
    served = invoke_tessera(tmp_path, "serve", **mysql_env(name))

    assert served.exit_code == 2
    assert "upgrade Tessera" in served.stderr
    assert "f00d" in served.stderr


async def test_processes_starting_together_keep_one_shared_value(tmp_path: Path) -> None:
    async with mariadb_database(tmp_path) as database:
        await migrate_config_database(database.settings)
        engines = [mysql_engine(database.settings) for _ in range(4)]
        stores = [config_schema_store(engine, database.settings) for engine in engines]
        try:
            kept = await asyncio.gather(
                *(store.keep_value("salt", f"salt-{n}") for n, store in enumerate(stores))
            )
        finally:
            await asyncio.gather(*(engine.dispose() for engine in engines))

    assert len(set(kept)) == 1
    assert kept[0].startswith("salt-")
