"""The real MariaDB the tests use (started by ``bash scripts/services up mariadb``).

Every test that opens a place gets its own database, ``tessera_test_<digest of the place>``:
empty the first time, the same data when the same place is opened again (close + reopen).
The databases are created and dropped by the unprivileged ``tessera`` user (allowed on
``tessera%``); ``drop_created_databases`` runs after each test (tests/contract/conftest.py and
the MySQL tests call it). When the server cannot be reached at all, the test is skipped with one
line naming the server and the error: on a machine where the services run, these tests run.

``TESSERA_TEST_MYSQL_HOST`` / ``_PORT`` / ``_PASSWORD`` point the tests elsewhere; the password
defaults to scripts/services' development one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tessera.settings import Settings
from tessera.storage.mysql.engine import DRIVER, mysql_engine
from tests.support.services import service_missing

HOST = os.environ.get("TESSERA_TEST_MYSQL_HOST", "127.0.0.1")
PORT = int(os.environ.get("TESSERA_TEST_MYSQL_PORT", "3306"))
USER = "tessera"
PASSWORD = os.environ.get("TESSERA_TEST_MYSQL_PASSWORD", "tessera-dev-password")
PREFIX = "tessera_test_"

_created: set[str] = set()
_unreachable: list[str] = []  # the error, once the server was found unreachable
_checked: list[bool] = []


def _default(field_name: str) -> Any:
    return Settings.model_fields[field_name].default


def mariadb_settings(database: str, **overrides: Any) -> Settings:
    """Settings naming the test server and ``database``; the pool settings at their defaults
    unless overridden by alias (``MYSQL_CONNECTION__POOL=3``)."""
    values: dict[str, Any] = {
        "MYSQL_HOST": HOST,
        "MYSQL_PORT": PORT,
        "MYSQL_USERNAME": USER,
        "MYSQL_PASSWORD": PASSWORD,
        "MYSQL_DATABASE": database,
        "MYSQL_CONNECTION__POOL": _default("mysql_pool_size"),
        "MYSQL_CONNECTION__MAX_OVERFLOW": _default("mysql_max_overflow"),
        "MYSQL_CONNECTION__POOL_TIMEOUT": _default("mysql_pool_timeout"),
        "MYSQL_CONNECTION__POOL_RECYCLE": _default("mysql_pool_recycle"),
    }
    values.update(overrides)
    return Settings(**values)


def database_for(place: Path) -> str:
    digest = hashlib.sha256(str(place.resolve()).encode()).hexdigest()[:24]
    return PREFIX + digest


def _admin_engine() -> AsyncEngine:
    url = sa.URL.create(DRIVER, username=USER, password=PASSWORD, host=HOST, port=PORT)
    return create_async_engine(url, poolclass=NullPool)


async def _admin(*statements: str) -> None:
    engine = _admin_engine()
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def require_mariadb() -> None:
    """Skip (loudly, once per run decided) when the server cannot be reached at all."""
    if not _checked:
        try:
            await _admin("SELECT 1")
        except Exception as error:  # noqa: BLE001 - any failure to connect means "not there"
            _unreachable.append(f"{type(error).__name__}: {getattr(error, 'orig', error)}")
        _checked.append(True)
    if _unreachable:
        service_missing(
            f"MariaDB NOT REACHABLE at {HOST}:{PORT} as {USER}: {_unreachable[0]} "
            "(start it with `bash scripts/services up mariadb`)"
        )


async def create_database(name: str) -> None:
    assert name.startswith(PREFIX)
    await _admin(
        f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    _created.add(name)


async def drop_databases(names: set[str]) -> None:
    if names:
        await _admin(*(f"DROP DATABASE IF EXISTS `{name}`" for name in sorted(names)))


def drop_created_databases() -> None:
    """Drop every database the finished test created (called from sync teardown)."""
    names = set(_created)
    _created.clear()
    if names:
        asyncio.run(drop_databases(names))


@dataclass(frozen=True)
class MariaDatabase:
    name: str
    settings: Settings
    engine: AsyncEngine  # the production engine (mysql_engine), pooled


@asynccontextmanager
async def mariadb_database(place: Path, **overrides: Any) -> AsyncIterator[MariaDatabase]:
    """The test's own database for ``place`` (created when missing; dropped after the test)."""
    await require_mariadb()
    name = database_for(place)
    await create_database(name)
    settings = mariadb_settings(name, **overrides)
    engine = mysql_engine(settings)
    try:
        yield MariaDatabase(name=name, settings=settings, engine=engine)
    finally:
        await engine.dispose()
