"""Which database errors mean "the server is away, slow or overloaded", and the two ways every
configuration store reaches its engine, which turn those into StorageUnavailable (503 with
Retry-After):

    async with connect(self._engine) as connection: ...   # engine.connect()
    async with begin(self._engine) as connection: ...     # engine.begin(): one transaction

An outage: no free connection in the pool within ``MYSQL_CONNECTION__POOL_TIMEOUT``
(SQLAlchemy's ``TimeoutError``); a connection that could not be made, broke, or waited past
``TESSERA_MYSQL_TIMEOUT_SECONDS`` for an answer (the MySQL client errors below, or SQLAlchemy
found it invalidated); a server with too many connections, shutting down, or giving up on a
lock or a deadlock (both are worth a retry); an embedded SQLite file locked past its busy
timeout. A constraint violation, a syntax error, a missing table (bugs, or conflicts the
stores handle themselves) are left as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tessera.errors import StorageUnavailable

# MySQL/MariaDB error numbers that mean the server cannot serve right now.
OUTAGE_CODES = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        1205,  # lock wait timeout exceeded
        1213,  # deadlock found; the transaction was rolled back
        1927,  # connection was killed (MariaDB)
        2002,  # cannot connect (socket)
        2003,  # cannot connect (TCP: refused, unreachable, timed out)
        2006,  # server has gone away
        2013,  # lost connection during query (read timeout included)
        2055,  # lost connection at a system call
    }
)
# What an embedded SQLite file answers when another writer held it past the busy timeout.
SQLITE_BUSY = ("database is locked", "database is busy")


class DatabaseUnavailable(StorageUnavailable):
    """StorageUnavailable because the configuration database is away, slow or overloaded."""

    public_message = "the configuration store is unavailable; retry later"


def is_outage(error: BaseException) -> bool:
    if isinstance(error, sqlalchemy.exc.TimeoutError):  # the pool had no free connection
        return True
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return _driver_says_outage(error.orig)
    return isinstance(error, OSError | TimeoutError)


def _driver_says_outage(error: BaseException | None) -> bool:
    if error is None:
        return False
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in OUTAGE_CODES
    text = str(error).lower()
    return any(busy in text for busy in SQLITE_BUSY)


def unavailable(error: BaseException) -> DatabaseUnavailable:
    # The kind of failure and the server's error number only: the message (host, statement)
    # is not for anonymous clients; the error stays the cause, for the logs.
    cause = getattr(error, "orig", None) or error
    args = getattr(cause, "args", ())
    code = f" {args[0]}" if args and isinstance(args[0], int) else ""
    return DatabaseUnavailable(
        f"the configuration database is unavailable ({type(cause).__name__}{code}); retry"
    )


@contextmanager
def outage_as_unavailable() -> Iterator[None]:
    """Inside: an outage of the database is raised as DatabaseUnavailable."""
    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, OSError, TimeoutError) as error:
        if is_outage(error):
            raise unavailable(error) from error
        raise


@asynccontextmanager
async def connect(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.connect()``, with an outage (taking the connection or using it) a 503."""
    with outage_as_unavailable():
        async with engine.connect() as connection:
            yield connection


@asynccontextmanager
async def begin(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()`` (committed when the block ends), with an outage a 503."""
    with outage_as_unavailable():
        async with engine.begin() as connection:
            yield connection
