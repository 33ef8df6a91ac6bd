"""Which Redis errors mean "Redis is away, slow or overloaded", and turning those into
StorageUnavailable (503 with Retry-After) at the edge of every Redis-backed store.

An outage: the connection could not be made, broke or timed out (``ConnectionError``,
including a pool that had no free connection in time, ``MaxConnectionsError``, a server still
loading its data or refusing the login; ``TimeoutError``; a bare ``OSError``), or the server
refuses the command for a state that passes (a replica promoted under us: ``ReadOnlyError``;
``maxmemory`` reached: ``OutOfMemoryError``; ``TRYAGAIN``, ``MASTERDOWN``, ``CLUSTERDOWN``).
Anything else (a wrong type, a script error: a bug) is left as it is.

``RedisHealth``, shared by the stores of one client, remembers whether the last command failed
so: work whose outcome nobody waits for (releasing locks, putting committed records back in
the cache) is then not waited for, as it would most likely cost the request a whole timeout
more. A request that was past its commit when Redis fell silent so answers within one timeout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from redis import exceptions as redis_errors

from tessera.errors import StorageUnavailable

P = ParamSpec("P")
T = TypeVar("T")

OUTAGES: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,  # MasterDownError is one
    OSError,
)


def is_outage(error: BaseException) -> bool:
    return isinstance(error, OUTAGES)


class RedisUnavailable(StorageUnavailable):
    """StorageUnavailable because Redis is away, slow or overloaded."""

    public_message = "the lock and cache store is unavailable; retry later"


def unavailable(error: BaseException) -> RedisUnavailable:
    # The kind of failure only: the message (host, port) is not for anonymous clients; the
    # error stays the cause, for the logs.
    return RedisUnavailable(f"Redis is unavailable ({type(error).__name__}); retry")


class RedisHealth:
    def __init__(self) -> None:
        # Whether the last command (of any request of this process) failed for an outage.
        self.failing = False

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Around a command: note how it went; an outage is raised as RedisUnavailable."""
        try:
            yield
        except OUTAGES as error:
            self.failing = True
            raise unavailable(error) from error
        self.failing = False


class RedisStore(Protocol):
    health: RedisHealth


S = TypeVar("S", bound=RedisStore)


def redis_port(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """A store method whose Redis outage is a RedisUnavailable (503) for its caller."""

    @functools.wraps(method)
    async def guarded(store: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with store.health.watch():
            return await method(store, *args, **kwargs)

    return guarded
