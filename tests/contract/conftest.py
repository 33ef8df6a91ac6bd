"""Backends the contract suites run against, one parameter per implementation of a port group.

Every contract test takes ``record_backend`` or ``config_backend`` (or the matching opener) and
runs once per backend named in ``RECORD_BACKENDS`` / ``CONFIG_BACKENDS``. Adding a backend
(Elasticsearch for records, MariaDB for configuration, Redis …) means writing one opener below
and adding it to the registry; the suites themselves do not change.

An opener is an async context manager taking a ``place``: a fresh folder for embedded backends.
A remote backend derives its own namespace (index prefix, database name) from it, so that every
test sees empty stores and opening the same place again opens the same data (close + reopen).
Openers build the real thing: no mocks, no fakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from tessera.settings import Settings
from tessera.storage.config_database import config_schema_store
from tessera.storage.ports import (
    EventStore,
    ProfileStore,
    RecordWriter,
    SchemaStore,
    SessionStore,
    SourceStore,
    TokenStore,
    UserStore,
)
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.stores import SqlSchemaStore, SqlSourceStore, SqlTokenStore, SqlUserStore
from tessera.storage.sqlite.backend import SqliteRecordBackend
from tests.support.elastic import drop_created_prefixes, elastic_backend
from tests.support.mariadb import drop_created_databases, mariadb_database


@dataclass
class RecordBackend:
    """The hot-record ports of one running backend."""

    name: str
    writer: RecordWriter
    events: EventStore
    sessions: SessionStore
    profiles: ProfileStore
    schema: SchemaStore
    # How many storage commits (transactions, bulk requests) the writer has made so far.
    commits: Callable[[], int]


@dataclass
class ConfigBackend:
    """The configuration ports of one backend."""

    name: str
    sources: SourceStore
    users: UserStore
    tokens: TokenStore
    schema: SchemaStore


RecordOpener = Callable[[Path], AbstractAsyncContextManager[RecordBackend]]


class OptionsRecordOpener(Protocol):
    """A record opener that also takes further arguments of its backend (e.g. export_page_size)."""

    def __call__(
        self, place: Path, **options: Any
    ) -> AbstractAsyncContextManager[RecordBackend]: ...


ConfigOpener = Callable[[Path], AbstractAsyncContextManager[ConfigBackend]]


def _default(field_name: str) -> Any:
    """A setting's built-in default, never what the environment of the test run says."""
    return Settings.model_fields[field_name].default


# --- SQLite (embedded) ------------------------------------------------------------------------


@asynccontextmanager
async def sqlite_records(place: Path, **options: Any) -> AsyncIterator[RecordBackend]:
    """`options`: further arguments of SqliteRecordBackend (e.g. export_page_size)."""
    backend = SqliteRecordBackend(
        place,
        batch_size=_default("writer_batch_size"),
        flush_interval_s=_default("writer_flush_interval_ms") / 1000,
        synchronous=_default("sqlite_synchronous"),
        readers=_default("sqlite_readers"),
        **options,
    )
    await backend.start()
    try:
        yield RecordBackend(
            name="sqlite",
            writer=backend.writer,
            events=backend.events,
            sessions=backend.sessions,
            profiles=backend.profiles,
            schema=backend,
            commits=lambda: backend.writer.commits,
        )
    finally:
        await backend.close()


@asynccontextmanager
async def sqlite_config(place: Path) -> AsyncIterator[ConfigBackend]:
    """Configuration stores with no schema yet: the fixture or the test installs it."""
    engine = sqlite_engine(place)
    try:
        yield ConfigBackend(
            name="sqlite",
            sources=SqlSourceStore(engine),
            users=SqlUserStore(engine),
            tokens=SqlTokenStore(engine),
            schema=SqlSchemaStore(engine),
        )
    finally:
        await engine.dispose()


# --- MariaDB (configuration on a server) ------------------------------------------------------


@asynccontextmanager
async def mariadb_config(place: Path) -> AsyncIterator[ConfigBackend]:
    """The same SQL stores on the test's own MariaDB database; the schema through Alembic."""
    async with mariadb_database(place) as database:
        engine = database.engine
        yield ConfigBackend(
            name="mariadb",
            sources=SqlSourceStore(engine),
            users=SqlUserStore(engine),
            tokens=SqlTokenStore(engine),
            schema=config_schema_store(engine, database.settings),
        )


@pytest.fixture(autouse=True)
def _drop_mariadb_databases() -> Iterator[None]:
    """After each test: drop the MariaDB databases its openers created (none: nothing to do)."""
    yield
    drop_created_databases()


# --- Elasticsearch (hot records on a cluster) -------------------------------------------------


@asynccontextmanager
async def elastic_records(place: Path, **options: Any) -> AsyncIterator[RecordBackend]:
    """The record stores on the test's own index prefix (tests/support/elastic.py);
    `options`: further arguments of ElasticRecordBackend."""
    async with elastic_backend(place, **options) as backend:
        yield RecordBackend(
            name="elasticsearch",
            writer=backend.writer,
            events=backend.events,
            sessions=backend.sessions,
            profiles=backend.profiles,
            schema=backend,
            commits=lambda: backend.writer.commits,
        )


@pytest.fixture(autouse=True)
def _drop_elastic_prefixes() -> Iterator[None]:
    """After each test: delete the indices and templates its openers created."""
    yield
    drop_created_prefixes()


# --- Registries: one entry per backend; the fixtures are parametrised over them --------------

RECORD_BACKENDS: dict[str, OptionsRecordOpener] = {
    "sqlite": sqlite_records,
    "elasticsearch": elastic_records,
}
CONFIG_BACKENDS: dict[str, ConfigOpener] = {"sqlite": sqlite_config, "mariadb": mariadb_config}


@pytest.fixture(params=list(RECORD_BACKENDS))
def open_records(request: pytest.FixtureRequest) -> RecordOpener:
    """Opens (starts) a record backend on a place and closes it on exit."""
    return RECORD_BACKENDS[request.param]


@pytest.fixture(params=list(CONFIG_BACKENDS))
def open_config(request: pytest.FixtureRequest) -> ConfigOpener:
    """Opens a configuration backend on a place, schema not installed, and closes it on exit."""
    return CONFIG_BACKENDS[request.param]


@pytest.fixture
async def record_backend(
    open_records: RecordOpener, tmp_path: Path
) -> AsyncIterator[RecordBackend]:
    async with open_records(tmp_path / "records") as backend:
        yield backend


@pytest.fixture
async def config_backend(open_config: ConfigOpener, tmp_path: Path) -> AsyncIterator[ConfigBackend]:
    async with open_config(tmp_path / "config") as backend:
        await backend.schema.create_schema()
        yield backend
