"""`tessera doctor`: a read-only health report of the installation the settings describe, the
settings `tessera serve` would run with.

Which checks run depends on the configured mode: the stores always, Redis when REDIS_HOST is
set, the cluster and its index settings with Elasticsearch, the queue (backlog, dead letters,
workers, retention) when one is in use. Each check has its own time limit (`report.py`),
so a server that is down or silent costs a few seconds and one failed row, never a hang.
Nothing is created or changed on the way. `cli/doctor.py` prints the report.
"""

from __future__ import annotations

from tessera.doctor import stores
from tessera.doctor.queue import queue_checks
from tessera.doctor.report import CHECK_SECONDS, Bounds, Check, Report, Status, failed, ok
from tessera.errors import ConfigurationError
from tessera.settings import Settings
from tessera.storage.config_database import describe_config_database
from tessera.storage.factory import build_storage
from tessera.workers.retention import uses_a_queue

SETTINGS = "settings"


async def run_doctor(settings: Settings, *, seconds: float = CHECK_SECONDS) -> Report:
    bounds = Bounds(settings, seconds)
    report = Report([settings_check(settings)])
    try:
        storage = build_storage(settings)
    except ConfigurationError as error:
        report.checks.append(failed(stores.CONFIGURATION, error.message))
        return report
    try:
        records = await bounds.check(
            stores.RECORDS, stores.records_where(storage), stores.record_store(storage)
        )
        configuration = await bounds.check(
            stores.CONFIGURATION,
            describe_config_database(settings),
            stores.config_store(storage, settings),
        )
        report.checks += [records, configuration]
        if settings.redis_host is not None:
            where = stores.redis_where(settings)
            report.checks.append(
                await bounds.check(stores.REDIS, where, stores.redis(storage, settings))
            )
        elastic = stores.elastic_of(storage)
        # A cluster that did not answer the record store's check is reported there once.
        if elastic is not None and records.status is not Status.FAILED:
            from tessera.doctor import elastic as cluster

            where = f"ELASTIC_HOST={elastic.connection.where()}"
            report.checks.append(
                await bounds.check(cluster.CLUSTER, where, cluster.cluster_health(elastic))
            )
            report.checks.append(
                await bounds.check(cluster.SHAPES, where, cluster.index_settings(elastic))
            )
            report.checks.append(
                await bounds.check(
                    cluster.REPRESENTATION, where, cluster.search_representation(elastic)
                )
            )
        if uses_a_queue(settings):
            report.checks += await queue_checks(
                settings, storage, bounds, configuration=configuration
            )
    finally:
        await bounds.quietly(storage.close())
    return report


def settings_check(settings: Settings) -> Check:
    """Loading them already refused bad values and weak production secrets; this says which
    mode they describe."""
    parts = {
        "records": "Elasticsearch" if settings.elastic_host else "SQLite",
        "configuration": "MySQL/MariaDB" if settings.mysql_host else "SQLite",
        "locks and caches": "Redis" if settings.redis_host else "the process",
    }
    distributed = bool(settings.elastic_host or settings.mysql_host or settings.redis_host)
    mode = "distributed" if distributed else "embedded"
    queue = settings.queue_kind if uses_a_queue(settings) else None
    queue_text = (
        f"queue {queue} (topic {settings.queue_topic}, {settings.queue_partitions} partitions)"
        if queue
        else "no queue"
    )
    stored = ", ".join(f"{what} in {where}" for what, where in parts.items())
    return ok(
        SETTINGS,
        f"{settings.environment.value}, {mode}: {stored}; data dir {settings.data_dir}; "
        f"ingest {settings.ingest_mode}, {queue_text}",
        environment=settings.environment.value,
        mode=mode,
        ingest_mode=settings.ingest_mode,
        queue=queue,
        **{key.replace(" ", "_"): value for key, value in parts.items()},
    )
