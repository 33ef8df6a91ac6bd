"""The MySQL/MariaDB engine: the MYSQL_* settings reach the pool, the URL keeps the password
out of sight, and production refuses the development password. Against the real MariaDB of
scripts/services (skipped loudly when it cannot be reached)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection

from tessera.errors import ConfigurationError
from tessera.settings import load_settings, secret_value
from tessera.storage.config_database import config_engine
from tessera.storage.mysql.engine import mysql_engine
from tests.support.mariadb import drop_created_databases, mariadb_database, mariadb_settings


@pytest.fixture(autouse=True)
def _drop_databases() -> Iterator[None]:
    yield
    drop_created_databases()


async def test_pool_settings_are_applied_to_the_engine(tmp_path: Path) -> None:
    async with mariadb_database(
        tmp_path,
        MYSQL_CONNECTION__POOL=3,
        MYSQL_CONNECTION__MAX_OVERFLOW=2,
        MYSQL_CONNECTION__POOL_TIMEOUT=0.5,
        MYSQL_CONNECTION__POOL_RECYCLE=120,
    ) as database:
        pool = database.engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool.timeout() == 0.5  # type: ignore[attr-defined]
        assert pool._max_overflow == 2  # type: ignore[attr-defined]
        assert pool._recycle == 120
        assert pool._pre_ping is True
        assert database.engine.url.query["charset"] == "utf8mb4"

        # The limit is real: pool + overflow connections open at once, one more waits for
        # the pool timeout and fails.
        held: list[AsyncConnection] = []
        try:
            for _ in range(5):
                connection = await database.engine.connect()
                held.append(connection)
                assert await connection.scalar(sa.text("SELECT 1")) == 1
            with pytest.raises(sqlalchemy.exc.TimeoutError):
                await database.engine.connect()
        finally:
            await asyncio.gather(*(connection.close() for connection in held))

        async with database.engine.connect() as connection:
            charset = await connection.scalar(sa.text("SELECT @@character_set_connection"))
            isolation = await connection.scalar(sa.text("SELECT @@tx_isolation"))
        assert charset == "utf8mb4"
        assert isolation == "READ-COMMITTED"


def test_the_url_keeps_an_odd_password_whole_and_out_of_sight() -> None:
    password = "p@ss:w/rd%?#-Odd-Secret"
    engine = mysql_engine(mariadb_settings("tessera_x", MYSQL_PASSWORD=password))
    try:
        assert engine.url.password == password
        assert engine.url.drivername == "mysql+asyncmy"
        assert password not in str(engine.url)
        assert password not in repr(engine)
    finally:
        asyncio.run(engine.dispose())


def test_a_host_without_a_username_is_a_configuration_error() -> None:
    settings = mariadb_settings("tessera_x", MYSQL_USERNAME=None)
    with pytest.raises(ConfigurationError, match="MYSQL_USERNAME"):
        mysql_engine(settings)


def test_config_engine_is_the_embedded_file_without_a_host(tmp_path: Path) -> None:
    embedded = config_engine(load_settings(TESSERA_DATA_DIR=str(tmp_path), MYSQL_HOST=None))
    server = config_engine(mariadb_settings("tessera_x"))
    try:
        assert embedded.dialect.name == "sqlite"
        assert server.dialect.name == "mysql"
    finally:
        asyncio.run(embedded.dispose())
        asyncio.run(server.dispose())


@pytest.mark.parametrize("password", ["tessera-dev-password", "short"])
def test_production_refuses_a_weak_mysql_password_without_showing_it(password: str) -> None:
    with pytest.raises(ConfigurationError, match="MYSQL_PASSWORD") as raised:
        load_settings(
            TESSERA_ENV="production",
            INSTALLATION_TOKEN="a-long-enough-installation-secret",
            MYSQL_HOST="db.internal",
            MYSQL_USERNAME="tessera",
            MYSQL_PASSWORD=password,
        )
    assert password not in raised.value.message


def test_production_takes_a_strong_mysql_password() -> None:
    settings = load_settings(
        TESSERA_ENV="production",
        INSTALLATION_TOKEN="a-long-enough-installation-secret",
        MYSQL_HOST="db.internal",
        MYSQL_USERNAME="tessera",
        MYSQL_PASSWORD="a-strong-database-password-1",
    )
    assert secret_value(settings.mysql_password) == "a-strong-database-password-1"
