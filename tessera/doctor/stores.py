"""`tessera doctor`'s checks of the stores: the record store (SQLite file or Elasticsearch), the
configuration store (SQLite file or MySQL/MariaDB) and Redis; those of the Elasticsearch
cluster are in doctor/elastic.py, imported only with ELASTIC_HOST.

They read only. The stores are built as `tessera serve` builds them but never started (starting
creates schemas and templates), and an embedded file that does not exist is not opened (opening
would create it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tessera.doctor.report import Check, failed, ok, warning
from tessera.settings import Settings
from tessera.storage.config_database import describe_config_database, uses_mysql
from tessera.storage.factory import Storage
from tessera.storage.sql.engine import CONFIG_FILE_NAME
from tessera.storage.sqlite.backend import SqliteRecordBackend

if TYPE_CHECKING:
    from tessera.storage.elastic.backend import ElasticRecordBackend

RECORDS = "record store"
CONFIGURATION = "configuration store"
REDIS = "redis"

CREATED_BY_INSTALL = "`tessera install` (or the first `tessera serve`) creates it"


def elastic_of(storage: Storage) -> ElasticRecordBackend | None:
    backend = storage.record_schema
    if isinstance(backend, SqliteRecordBackend):
        return None  # the embedded mode, which never loads the Elasticsearch backend
    from tessera.storage.elastic.backend import ElasticRecordBackend

    return backend if isinstance(backend, ElasticRecordBackend) else None


def records_where(storage: Storage) -> str:
    backend = storage.record_schema
    if isinstance(backend, SqliteRecordBackend):
        return f"embedded SQLite file {backend.path}"
    if (elastic := elastic_of(storage)) is not None:
        return f"Elasticsearch at ELASTIC_HOST={elastic.connection.where()}"
    return "the record store"


def redis_where(settings: Settings) -> str:
    return f"REDIS_HOST={settings.redis_host}:{settings.redis_port}"


async def record_store(storage: Storage) -> Check:
    where = records_where(storage)
    version = await storage.record_schema.installed_version()
    if version is None:
        return warning(RECORDS, f"{where}: no schema yet; {CREATED_BY_INSTALL}")
    return ok(RECORDS, f"{where}: schema version {version}", schema_version=version)


async def config_store(storage: Storage, settings: Settings) -> Check:
    where = describe_config_database(settings)
    schema = storage.config_schema
    if uses_mysql(settings):
        from tessera.storage.mysql.schema import MigratedSchemaStore

        assert isinstance(schema, MigratedSchemaStore)
        # Raises, with what to do, for a schema older or newer than this code.
        state = await schema.check()
        if state.empty:
            return warning(CONFIGURATION, f"{where}: an empty database; {CREATED_BY_INSTALL}")
        revision = state.current
        return ok(CONFIGURATION, f"{where}: schema at revision {revision}", revision=revision)
    if not (settings.data_dir / CONFIG_FILE_NAME).exists():
        return warning(CONFIGURATION, f"{where}: not there yet; {CREATED_BY_INSTALL}")
    version = await schema.installed_version()
    if version is None:
        return warning(CONFIGURATION, f"{where}: no schema yet; {CREATED_BY_INSTALL}")
    return ok(CONFIGURATION, f"{where}: schema version {version}", schema_version=version)


async def redis(storage: Storage, settings: Settings) -> Check:
    client = storage.redis_client
    if client is None:
        return failed(REDIS, f"{redis_where(settings)}: no Redis client was built")
    info = await client.info("server")
    version = str(info.get("redis_version", "?"))
    return ok(REDIS, f"{redis_where(settings)} answers (Redis {version})", version=version)
