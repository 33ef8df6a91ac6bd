"""The configuration schema on a MySQL/MariaDB server, owned by the Alembic migrations.

A server database outlives the code that uses it and is shared by every Tessera process, so its
schema is never created on the fly from the table definitions as the embedded SQLite file's is:
``tessera migrate`` upgrades it revision by revision. Start-up (``create_schema``) only creates
the schema of an empty database (the first start of a new installation, through the same
migrations) and otherwise refuses to run on a schema older than the code, or newer than it, with
a message that says what to do. A server that cannot be reached, or refuses the login, is a
``StorageUnavailable`` naming ``MYSQL_HOST`` and the server's error; never the password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.errors import ConfigurationError, StorageUnavailable
from tessera.storage.mysql.migrate import (
    MIGRATIONS_DIR,
    OnStep,
    SchemaState,
    schema_state,
    upgrade,
)
from tessera.storage.sql.outage import DatabaseUnavailable
from tessera.storage.sql.stores import SqlSchemaStore

# What a driver raises when the server is not there or refuses the login: the connect error
# (2003 refused, 2005 unknown host, 1045 access denied, 1049 unknown database …), a broken
# socket, or a connect that timed out.
_UNREACHABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    OSError,
    TimeoutError,
)


class MigratedSchemaStore(SqlSchemaStore):
    """SchemaStore and SharedValues of a server database whose schema Alembic owns.

    ``where`` names the server for messages (see ``describe_server``); ``secret`` is the
    password, scrubbed from any server error that would quote it; ``migrations`` is the
    revisions' folder (another one only in tests); ``migration_engine`` makes the engine the
    migrations run on (closed after them), one without the serving engine's read timeout.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        where: str,
        secret: str | None = None,
        migrations: Path = MIGRATIONS_DIR,
        migration_engine: Callable[[], AsyncEngine] | None = None,
    ) -> None:
        super().__init__(engine)
        self._where = where
        self._secret = secret
        self._migrations = migrations
        self._migration_engine = migration_engine

    @asynccontextmanager
    async def _reaching(self) -> AsyncIterator[None]:
        try:
            yield
        except (*_UNREACHABLE, DatabaseUnavailable) as error:
            raise StorageUnavailable(
                f"cannot use the configuration database at {self._where}: {self._reason(error)}"
            ) from None

    def _reason(self, error: BaseException) -> str:
        cause = getattr(error, "orig", None) or error
        text = str(cause) or type(cause).__name__
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    async def state(self) -> SchemaState:
        async with self._reaching():
            return await schema_state(self._engine, self._migrations)

    async def check(self) -> SchemaState:
        """The schema's state; raises unless it is at head or the database is empty."""
        state = await self.state()
        if state.up_to_date or state.empty:
            return state
        if state.current is None:
            raise ConfigurationError(
                f"the configuration database at {self._where} has Tessera tables but no "
                "migration history (alembic_version); it was not made by `tessera migrate`. "
                "Point MYSQL_DATABASE at an empty database, or restore one made by Tessera"
            )
        if not state.known:
            raise ConfigurationError(
                f"the configuration database at {self._where} is at schema revision "
                f"{state.current}, which this version of Tessera does not know (a newer one "
                "migrated it): upgrade Tessera"
            )
        raise ConfigurationError(
            f"the configuration database at {self._where} is at schema revision "
            f"{state.current}, older than this version of Tessera needs ({state.head}): "
            "run `tessera migrate`"
        )

    async def migrate(self, on_step: OnStep | None = None) -> SchemaState:
        """Apply every pending revision; the state before. Safe to run again."""
        before = await self.state()
        if not before.known:
            await self.check()  # raises: this code cannot migrate a newer schema
        # Its own engine where given: one without the serving engine's read timeout.
        engine = self._migration_engine() if self._migration_engine else self._engine
        try:
            async with self._reaching():
                await upgrade(engine, on_step, self._migrations)
        finally:
            if engine is not self._engine:
                await engine.dispose()
        return before

    async def create_schema(self) -> None:
        """Start-up and ``tessera install``: an empty database gets the schema (all
        migrations); one at head is left alone; any other refuses with what to do."""
        state = await self.check()
        if state.empty:
            await self.migrate()

    async def installed_version(self) -> int | None:
        async with self._reaching():
            return await super().installed_version()

    async def keep_value(self, key: str, value: str) -> str:
        """Processes starting together on a new database may both find no value and both
        insert one: the loser's insert fails on the key, and it takes the winner's value."""
        async with self._reaching():
            try:
                return await super().keep_value(key, value)
            except sqlalchemy.exc.IntegrityError:
                return await super().keep_value(key, value)
