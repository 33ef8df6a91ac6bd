"""Creating the configuration store's engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tessera.storage.private_files import keep_private, private_data_dir

CONFIG_FILE_NAME = "config.sqlite"


def sqlite_engine(data_dir: Path) -> AsyncEngine:
    private_data_dir(data_dir)
    path = data_dir / CONFIG_FILE_NAME
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # The first connection created the file with SQLite's default mode; its -wal and
        # -shm files take the mode the file has when they are made.
        keep_private(path)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    return engine
