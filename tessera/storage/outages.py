"""Whether an error means a storage server is away, slow or overloaded, whichever backend
raised it: for the last-resort boundaries (collect/routes.py, api/app.py), which answer such an
error with 503 and Retry-After should one ever get past a store without becoming
StorageUnavailable there. Each backend decides for its own errors."""

from __future__ import annotations

from elastic_transport import TransportError
from elasticsearch import ApiError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from tessera.storage.elastic.client import is_outage as elastic_outage
from tessera.storage.redis.outage import is_outage as redis_outage
from tessera.storage.sql.outage import is_outage as database_outage

# The base classes of every error ``is_outage`` may answer True for.
OUTAGE_ERROR_TYPES: tuple[type[Exception], ...] = (
    RedisError,
    SQLAlchemyError,
    TransportError,
    ApiError,
    OSError,
)


def is_outage(error: BaseException) -> bool:
    return redis_outage(error) or database_outage(error) or elastic_outage(error)
