"""Before serving: every server the settings name answers, so that a wrong host or a service
that is down stops start-up with one line naming the variable — not with a traceback from
inside the server's start, and not later, in the first visitor's request."""

from __future__ import annotations

from tessera.settings import Settings
from tessera.storage.config_database import check_config_database
from tessera.storage.factory import build_elastic, build_shared_services


async def check_services(settings: Settings) -> None:
    """Raises StorageUnavailable or ConfigurationError saying which service and why."""
    await check_config_database(settings)
    if settings.elastic_host is not None:
        records = build_elastic(settings)
        try:
            # Idempotent: the templates every index is created from (ELASTIC_HOST named in
            # the error when the cluster does not answer).
            await records.create_schema()
        finally:
            await records.client.close()
    if settings.redis_host is not None:
        redis = build_shared_services(settings)
        try:
            await redis.start()
        finally:
            await redis.close()
