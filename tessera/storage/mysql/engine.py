"""Creating the MySQL/MariaDB engine from the ``MYSQL_*`` settings.

Choices made here, and why:

- ``pool_pre_ping``: a pooled connection the server closed (restart, ``wait_timeout``) is found
  and replaced when taken from the pool, instead of failing the request that drew it;
  ``pool_recycle`` replaces connections before the server would close them anyway.
- ``charset=utf8mb4``: the full Unicode range (MySQL's ``utf8`` stops at three bytes).
- ``READ COMMITTED``: each statement sees what is committed when it runs, as the stores assume
  (a claim's UPDATE re-checks "still due" against the latest data); it also takes no gap locks,
  so concurrent outbox inserts and claims do not deadlock each other as they can under InnoDB's
  default REPEATABLE READ.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tessera.errors import ConfigurationError
from tessera.settings import Settings, secret_value

DRIVER = "mysql+asyncmy"


def mysql_url(settings: Settings) -> sa.URL:
    """The server's URL; ``URL.create`` escapes whatever characters the password holds."""
    if not settings.mysql_host:
        raise ConfigurationError("MYSQL_HOST: not set, so there is no MySQL/MariaDB server to use")
    if not settings.mysql_username:
        raise ConfigurationError("MYSQL_USERNAME: must be set when MYSQL_HOST is")
    return sa.URL.create(
        DRIVER,
        username=settings.mysql_username,
        password=secret_value(settings.mysql_password),
        host=settings.mysql_host,
        port=settings.mysql_port,
        database=settings.mysql_database,
        query={"charset": "utf8mb4"},
    )


def mysql_engine(settings: Settings, *, migrating: bool = False) -> AsyncEngine:
    """A pooled engine; nothing connects until the first use (start-up checks reachability).

    Every wait is bounded, so a server that is gone, silent or overloaded costs a request
    one timeout and then a 503 (the stores turn the errors into StorageUnavailable,
    sql/outage.py): a free connection from the pool within ``MYSQL_CONNECTION__POOL_TIMEOUT``;
    the TCP connection within ``TESSERA_MYSQL_CONNECT_TIMEOUT_SECONDS``; every answer (the
    server's greeting included) within ``TESSERA_MYSQL_TIMEOUT_SECONDS``. The driver's writes
    only fill a buffer, so a silent server shows as the read that waits for its answer.
    ``migrating``: no read timeout, for Alembic (a long ALTER, or waiting for the migration
    lock another process holds, is no outage).
    """
    engine = create_async_engine(
        mysql_url(settings),
        pool_size=settings.mysql_pool_size,
        max_overflow=settings.mysql_max_overflow,
        pool_timeout=settings.mysql_pool_timeout,
        pool_recycle=settings.mysql_pool_recycle,
        pool_pre_ping=True,
        isolation_level="READ COMMITTED",
        connect_args={
            "connect_timeout": settings.mysql_connect_timeout_seconds,
            "read_timeout": None if migrating else settings.mysql_timeout_seconds,
        },
    )
    event.listen(engine.sync_engine, "do_connect", _connect_or_report_why_not)
    return engine


# The MySQL client's error number for "Can't connect to MySQL server".
CR_CONN_HOST_ERROR = 2003


def _connect_or_report_why_not(
    dialect: Dialect, _record: object, cargs: list[Any], cparams: dict[str, Any]
) -> Any:
    """Connect as SQLAlchemy would. asyncmy lets a bare RuntimeError out when the server resets
    the connection right after accepting it (setting keep-alive on a socket already gone);
    it is the driver's own "Can't connect" (2003) here, so it is seen as the outage it is."""
    try:
        return dialect.connect(*cargs, **cparams)
    except RuntimeError as error:
        dbapi: Any = dialect.loaded_dbapi
        raise dbapi.OperationalError(
            CR_CONN_HOST_ERROR, f"Can't connect to MySQL server ({error})"
        ) from error


def describe_server(settings: Settings) -> str:
    """Where the configuration lives, for messages: host, port, database and user, no password."""
    return (
        f"MYSQL_HOST={settings.mysql_host}:{settings.mysql_port} "
        f"(database {settings.mysql_database!r}, user {settings.mysql_username!r})"
    )
