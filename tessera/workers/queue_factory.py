"""The one place that picks the ingest queue backend from the settings. Broker client
libraries are imported only when their backend is chosen, so the embedded mode pays nothing
for them at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tessera.errors import ConfigurationError
from tessera.queue.ports import IngestQueue, QueueRetention
from tessera.settings import Settings, secret_value
from tessera.storage.extras import KAFKA, PULSAR, REDIS, require
from tessera.storage.private_files import private_data_dir

if TYPE_CHECKING:
    from redis.asyncio import Redis


def retention_of(settings: Settings) -> QueueRetention:
    return QueueRetention(
        hours=settings.queue_retention_hours, megabytes=settings.queue_retention_mb
    )


def build_queue(settings: Settings, redis: Redis | None = None) -> IngestQueue:
    """The configured queue; ``redis`` is the client the storage already holds, if any."""
    kind = settings.queue_kind
    topic, partitions = settings.queue_topic, settings.queue_partitions
    if kind == "embedded":
        from tessera.queue.embedded.queue import SqliteIngestQueue

        private_data_dir(settings.data_dir)
        return SqliteIngestQueue(
            settings.data_dir / "queue.db",
            topic=topic,
            partitions=partitions,
            lease_seconds=settings.queue_lease_seconds,
            publish_timeout_seconds=settings.queue_publish_timeout_seconds,
            retention=retention_of(settings),
            max_backlog_mb=settings.queue_max_backlog_mb,
        )
    if kind == "redis":
        require(REDIS)
        from tessera.queue.redis.queue import RedisIngestQueue
        from tessera.storage.redis.client import KeySpace, redis_client

        if settings.redis_host is None:
            raise ConfigurationError("TESSERA_QUEUE=redis needs REDIS_HOST")
        return RedisIngestQueue(
            redis if redis is not None else redis_client(settings),
            KeySpace(settings.redis_prefix),
            lease_seconds=settings.queue_lease_seconds,
            publish_timeout=settings.queue_publish_timeout_seconds,
            topic=topic,
            partitions=partitions,
            retention=retention_of(settings),
            max_backlog_mb=settings.queue_max_backlog_mb,
        )
    if kind == "kafka":
        require(KAFKA)
        from tessera.queue.kafka.queue import KafkaIngestQueue

        if not settings.kafka_bootstrap_servers:
            raise ConfigurationError("TESSERA_QUEUE=kafka needs KAFKA_BOOTSTRAP_SERVERS")
        return KafkaIngestQueue(
            settings.kafka_bootstrap_servers,
            publish_timeout=settings.queue_publish_timeout_seconds,
            topic=topic,
            partitions=partitions,
            retention=retention_of(settings),
            max_backlog_mb=settings.queue_max_backlog_mb,
        )
    if kind == "pulsar":
        require(PULSAR)
        from tessera.queue.pulsar.queue import PulsarIngestQueue

        if not settings.pulsar_host:
            raise ConfigurationError("TESSERA_QUEUE=pulsar needs PULSAR_HOST")
        return PulsarIngestQueue(
            settings.pulsar_host,
            admin_url=settings.pulsar_admin_url or _admin_url(settings.pulsar_host),
            token=secret_value(settings.pulsar_auth_token),
            namespace=settings.pulsar_namespace,
            publish_timeout=settings.queue_publish_timeout_seconds,
            topic=topic,
            partitions=partitions,
            max_backlog_mb=settings.queue_max_backlog_mb,
        )
    raise ConfigurationError(f"TESSERA_QUEUE: unknown queue {kind!r}")


def _admin_url(service_url: str) -> str:
    """``pulsar://host:6650`` → ``http://host:8080`` (``pulsar+ssl`` → https on 8443)."""
    parts = urlsplit(service_url.split(",")[0])
    secure = parts.scheme.endswith("+ssl")
    host = parts.hostname or "127.0.0.1"
    return f"https://{host}:8443" if secure else f"http://{host}:8080"
