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

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tessera.errors import ConfigurationError
from tessera.settings import Settings

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
        password=settings.mysql_password,
        host=settings.mysql_host,
        port=settings.mysql_port,
        database=settings.mysql_database,
        query={"charset": "utf8mb4"},
    )


def mysql_engine(settings: Settings) -> AsyncEngine:
    """A pooled engine; nothing connects until the first use (start-up checks reachability)."""
    return create_async_engine(
        mysql_url(settings),
        pool_size=settings.mysql_pool_size,
        max_overflow=settings.mysql_max_overflow,
        pool_timeout=settings.mysql_pool_timeout,
        pool_recycle=settings.mysql_pool_recycle,
        pool_pre_ping=True,
        isolation_level="READ COMMITTED",
    )


def describe_server(settings: Settings) -> str:
    """Where the configuration lives, for messages: host, port, database and user, no password."""
    return (
        f"MYSQL_HOST={settings.mysql_host}:{settings.mysql_port} "
        f"(database {settings.mysql_database!r}, user {settings.mysql_username!r})"
    )
