"""The embedded event store as one unit: schema, writer thread and readers, started and stopped
together."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tessera.errors import StorageUnavailable
from tessera.storage.private_files import private_data_dir
from tessera.storage.sqlite import schema
from tessera.storage.sqlite.checkpointer import Checkpointer
from tessera.storage.sqlite.connection import open_connection
from tessera.storage.sqlite.readers import ReaderPool
from tessera.storage.sqlite.stores import (
    EXPORT_PAGE_SIZE,
    SqliteEventStore,
    SqliteProfileStore,
    SqliteSessionStore,
)
from tessera.storage.sqlite.writer import SqliteWriter

FILE_NAME = "events.sqlite"


class SqliteRecordBackend:
    def __init__(
        self,
        data_dir: Path,
        *,
        batch_size: int,
        flush_interval_s: float,
        synchronous: str,
        readers: int,
        checkpoint_interval_s: float = 1.0,
        export_page_size: int = EXPORT_PAGE_SIZE,
    ) -> None:
        self.path = data_dir / FILE_NAME
        self._synchronous = synchronous
        self.writer = SqliteWriter(
            self.path,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            synchronous=synchronous,
        )
        self._readers = ReaderPool(self.path, size=readers, synchronous=synchronous)
        self._checkpointer = Checkpointer(
            self.path, interval_s=checkpoint_interval_s, synchronous=synchronous
        )
        self.events = SqliteEventStore(self._readers, page_size=export_page_size)
        self.sessions = SqliteSessionStore(self._readers, page_size=export_page_size)
        self.profiles = SqliteProfileStore(self._readers)

    async def create_schema(self) -> None:
        await asyncio.to_thread(self._create_schema)

    async def installed_version(self) -> int | None:
        return await asyncio.to_thread(self._installed_version)

    def _create_schema(self) -> None:
        try:
            private_data_dir(self.path.parent)
            connection = open_connection(self.path, synchronous=self._synchronous, read_only=False)
            try:
                schema.create_schema(connection)
            finally:
                connection.close()
        except (OSError, sqlite3.Error) as exc:
            raise StorageUnavailable(f"cannot create the event store {self.path}: {exc}") from exc

    def _installed_version(self) -> int | None:
        if not self.path.exists():
            return None
        connection = open_connection(self.path, synchronous=self._synchronous, read_only=True)
        try:
            return schema.installed_version(connection)
        finally:
            connection.close()

    async def start(self) -> None:
        await self.create_schema()
        self.writer.start()
        self._checkpointer.start()

    async def close(self) -> None:
        await asyncio.to_thread(self.writer.stop)
        await asyncio.to_thread(self._readers.close)
        await asyncio.to_thread(self._checkpointer.stop)
