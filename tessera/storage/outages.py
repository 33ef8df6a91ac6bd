"""Whether an error means a storage server is away, slow or overloaded, whichever backend
raised it: for the last-resort boundaries (collect/routes.py, api/app.py), which answer such an
error with 503 and Retry-After should one ever get past a store without becoming
StorageUnavailable there. Each backend decides for its own errors.

A client library that was never imported cannot have raised anything, so the distributed
backends are asked only once their client is loaded (storage/extras.py): the embedded mode
imports none of them.
"""

from __future__ import annotations

import sys

from sqlalchemy.exc import SQLAlchemyError

from tessera.storage.sql.outage import is_outage as database_outage


def outage_error_types() -> tuple[type[Exception], ...]:
    """The base classes of every error ``is_outage`` may answer True for, among the clients
    loaded by now (call it once the storage is built)."""
    types: list[type[Exception]] = [SQLAlchemyError, OSError]
    if "redis" in sys.modules:
        from redis.exceptions import RedisError

        types.append(RedisError)
    if "elasticsearch" in sys.modules:
        from elastic_transport import TransportError
        from elasticsearch import ApiError

        types += [TransportError, ApiError]
    return tuple(types)


def is_outage(error: BaseException) -> bool:
    if database_outage(error):
        return True
    if "redis" in sys.modules:
        from tessera.storage.redis.outage import is_outage as redis_outage

        if redis_outage(error):
            return True
    if "elasticsearch" in sys.modules:
        from tessera.storage.elastic.client import is_outage as elastic_outage

        return elastic_outage(error)
    return False
