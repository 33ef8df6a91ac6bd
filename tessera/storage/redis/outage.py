"""Which Redis errors mean "Redis is away, slow or overloaded", and turning those into
StorageUnavailable (503 with Retry-After) at the edge of every Redis-backed store.

An outage: the connection could not be made, broke or timed out (``ConnectionError``,
including a pool that had no free connection in time, ``MaxConnectionsError``, a server still
loading its data or refusing the login; ``TimeoutError``; a bare ``OSError``), or the server
refuses the command for a state that passes (a replica promoted under us: ``ReadOnlyError``;
``maxmemory`` reached: ``OutOfMemoryError``; ``TRYAGAIN``, ``MASTERDOWN``, ``CLUSTERDOWN``).
Anything else (a wrong type, a script error: a bug) is left as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

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


def unavailable(error: BaseException) -> RedisUnavailable:
    return RedisUnavailable(f"Redis is unavailable ({type(error).__name__}: {error}); retry")


def redis_port(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """A store method whose Redis outage is a StorageUnavailable for its caller."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except OUTAGES as error:
            raise unavailable(error) from error

    return guarded
