"""Alembic's environment for the configuration schema.

Tessera runs migrations itself (tessera/storage/mysql/migrate.py) and hands over an open
connection in ``config.attributes["connection"]``, with an optional per-step callback in
``config.attributes["on_version_apply"]``. Run by the ``alembic`` command instead (writing a
new revision), it connects to the database the ``MYSQL_*`` settings name.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from tessera.storage.sql.all_tables import metadata


def _run(connection: Connection) -> None:
    on_step = context.config.attributes.get("on_version_apply")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        transaction_per_migration=True,
        on_version_apply=on_step,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_settings() -> None:
    # Run by hand (alembic's own command line): the server database of the settings.
    from tessera.settings import load_settings
    from tessera.storage.mysql.engine import mysql_engine

    engine = mysql_engine(load_settings(), migrating=True)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    given: Any = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        asyncio.run(_run_from_settings())


_main()
