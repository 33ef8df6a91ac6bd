"""The embedded store's single writer: one thread, one connection, group commit.

Callers on the event loop hand a ChangeSet to ``commit`` and wait. The writer thread takes
whatever has queued up (up to ``batch_size`` records, waiting at most ``flush_interval`` for a
batch to fill), writes it in one transaction, commits, and then wakes every caller of that batch
at once. One commit serves many requests, so durability costs little per request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from tessera.errors import RecordRejected, StorageUnavailable
from tessera.storage.ports import ChangeSet
from tessera.storage.sqlite.codec import encode, event_row, profile_row, session_row
from tessera.storage.sqlite.connection import open_connection
from tessera.storage.sqlite.grouping import STOP, Stop, iter_groups, start_connection_thread

log = logging.getLogger(__name__)

INSERT_EVENT = (
    "INSERT INTO events (tenant, id, type, time, inserted, profile_id, session_id, source_id, doc)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, id) DO NOTHING"
)
UPSERT_SESSION = (
    "INSERT INTO sessions (tenant, id, profile_id, updated, doc) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant, id) DO UPDATE SET profile_id = excluded.profile_id,"
    " updated = excluded.updated, doc = excluded.doc"
)
UPSERT_PROFILE = (
    "INSERT INTO profiles (tenant, id, updated, doc) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (tenant, id) DO UPDATE SET updated = excluded.updated, doc = excluded.doc"
)
DELETE_ALIASES = "DELETE FROM profile_aliases WHERE tenant = ? AND profile_id = ?"
UPSERT_IDENTITY = (
    "INSERT INTO identities (tenant, digest, profile_id) VALUES (?, ?, ?)"
    " ON CONFLICT (tenant, digest) DO UPDATE SET profile_id = excluded.profile_id"
)
DELETE_IDENTITY = "DELETE FROM identities WHERE tenant = ? AND digest = ?"
RETIRE_PROFILE = (
    "INSERT INTO retired_profiles (tenant, id, survivor_id, doc) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (tenant, id) DO UPDATE SET survivor_id = excluded.survivor_id,"
    " doc = excluded.doc"
)
DELETE_PROFILE = "DELETE FROM profiles WHERE tenant = ? AND id = ?"
DELETE_RETIRED = "DELETE FROM retired_profiles WHERE tenant = ? AND id = ?"
# Erasure: every table that can hold something about the profile ids, in one transaction.
ERASE = (
    "DELETE FROM events WHERE tenant = ? AND profile_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM sessions WHERE tenant = ? AND profile_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM identities WHERE tenant = ? AND profile_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM profile_aliases WHERE tenant = ?1 AND (alias IN (SELECT value FROM"
    " json_each(?2)) OR profile_id IN (SELECT value FROM json_each(?2)))",
    "DELETE FROM retired_profiles WHERE tenant = ? AND id IN (SELECT value FROM json_each(?))",
    "DELETE FROM profiles WHERE tenant = ? AND id IN (SELECT value FROM json_each(?))",
)
ERASE_PROFILE_ONLY = ERASE[2:]
UPSERT_ALIAS = (
    "INSERT INTO profile_aliases (tenant, alias, profile_id) VALUES (?, ?, ?)"
    " ON CONFLICT (tenant, alias) DO UPDATE SET profile_id = excluded.profile_id"
)


@dataclass(slots=True)
class _Pending:
    changes: ChangeSet
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


def _record_count(pending: _Pending) -> int:
    return len(pending.changes)


class SqliteWriter:
    def __init__(
        self, path: Path, *, batch_size: int, flush_interval_s: float, synchronous: str
    ) -> None:
        self._path = path
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[_Pending | Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.commits = 0
        self.records = 0

    def start(self) -> None:
        self._thread, failure = start_connection_thread(
            "tessera-sqlite-writer",
            connect=self._open,
            serve=self._serve,
            opening_errors=sqlite3.Error,
        )
        if failure is not None:
            raise StorageUnavailable(f"cannot open the event store {self._path}: {failure}")

    def stop(self) -> None:
        """Commit what is queued, then end the thread."""
        if self._thread is None:
            return
        self._queue.put(STOP)
        self._thread.join()
        self._thread = None

    async def commit(self, changes: ChangeSet) -> None:
        if self._thread is None:
            raise StorageUnavailable("the event store is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Pending(changes, future, loop))
        await future

    def _open(self) -> sqlite3.Connection:
        connection = open_connection(self._path, synchronous=self._synchronous, read_only=False)
        # Checkpoints run on their own thread (checkpointer.py), never inside a commit.
        connection.execute("PRAGMA wal_autocheckpoint=0")
        return connection

    def _serve(self, connection: sqlite3.Connection) -> None:
        batches = iter_groups(
            self._queue,
            size_of=_record_count,
            limit=self._batch_size,
            flush_interval_s=self._flush_interval_s,
        )
        for batch in batches:
            self._write(connection, batch)

    def _write(self, connection: sqlite3.Connection, batch: list[_Pending]) -> None:
        error: StorageUnavailable | RecordRejected | None = None
        try:
            self._apply(connection, batch)
        # This thread serves every caller: whatever goes wrong, it must survive and say so to
        # the callers concerned, never die and leave them (and all later ones) waiting.
        except Exception as exc:  # noqa: BLE001
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if len(batch) > 1:
                # One bad change set must not fail its neighbours: retry them one by one.
                for item in batch:
                    self._write(connection, [item])
                return
            log.error("event store commit failed: %s", exc)
            error = _failure(exc)
        else:
            self.commits += 1
            self.records += sum(len(item.changes) for item in batch)
        # One wake-up per event loop for the whole batch, not one per caller.
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for item in batch:
            by_loop.setdefault(item.loop, []).append(item.future)
        for loop, futures in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, futures, error)
            except RuntimeError:
                log.warning("a caller's event loop closed before its commit was acknowledged")

    def _apply(self, connection: sqlite3.Connection, batch: list[_Pending]) -> None:
        events = [event_row(e) for item in batch for e in item.changes.events]
        sessions = [session_row(s) for item in batch for s in item.changes.sessions]
        profiles = [profile_row(p) for item in batch for p in item.changes.profiles]
        owners = [(row[0], row[1]) for row in profiles]
        aliases = [
            (p.tenant, alias, p.id)
            for item in batch
            for p in item.changes.profiles
            for alias in p.ids
            if alias != p.id
        ]
        changes = [item.changes for item in batch]
        connection.execute("BEGIN IMMEDIATE")
        # Retiring a profile deletes its row: it must run before any upsert of the same batch
        # that brings that profile back (an unmerge right after a merge).
        retired = [r for c in changes for r in c.retired]
        if retired:
            connection.executemany(
                RETIRE_PROFILE,
                [
                    (r.profile.tenant, r.profile.id, r.survivor_id, encode(r.profile))
                    for r in retired
                ],
            )
            connection.executemany(
                DELETE_PROFILE, [(r.profile.tenant, r.profile.id) for r in retired]
            )
        restored = [key for c in changes for key in c.restored]
        if restored:
            connection.executemany(DELETE_RETIRED, restored)
        if profiles:
            connection.executemany(UPSERT_PROFILE, profiles)
            # A profile's aliases are exactly the other ids it lists now: drop the old ones
            # first (an indexed lookup that usually finds nothing), then add the current ones.
            connection.executemany(DELETE_ALIASES, owners)
        if aliases:
            connection.executemany(UPSERT_ALIAS, aliases)
        if sessions:
            connection.executemany(UPSERT_SESSION, sessions)
        if events:
            connection.executemany(INSERT_EVENT, events)
        released = [key for c in changes for key in c.released_identities]
        if released:
            connection.executemany(DELETE_IDENTITY, released)
        links = [(i.tenant, i.digest, i.profile_id) for c in changes for i in c.identities]
        if links:
            connection.executemany(UPSERT_IDENTITY, links)
        for erasure in (e for c in changes for e in c.erasures):
            ids = encode(list(erasure.profile_ids))
            for statement in ERASE_PROFILE_ONLY if erasure.keep_records else ERASE:
                connection.execute(statement, (erasure.tenant, ids))
        connection.execute("COMMIT")


def _failure(exc: Exception) -> StorageUnavailable | RecordRejected:
    """What a failed commit of one change set means to its caller: SQLite's own trouble
    (locked, disk full, I/O) may pass; a record it cannot take (not encodable, a broken
    constraint) will be refused again however often it is sent."""
    if isinstance(exc, sqlite3.OperationalError) or (
        isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError)
    ):
        return StorageUnavailable(f"the event store could not commit: {exc}")
    return RecordRejected(f"the event store refused a record: {exc}")


def _settle(
    futures: list[asyncio.Future[None]], error: StorageUnavailable | RecordRejected | None
) -> None:
    for future in futures:
        if future.done():  # the caller gave up (client went away); nothing to tell it
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
