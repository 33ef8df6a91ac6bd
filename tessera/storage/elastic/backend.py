"""The Elasticsearch record store as one unit: client, templates, writer and readers, started
and stopped together. Same surface as SqliteRecordBackend (writer, events, sessions,
profiles, create_schema, installed_version, start, close)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from elastic_transport import TransportError
from elasticsearch import ApiError

from tessera.errors import StorageUnavailable
from tessera.model.common import DEFAULT_TENANT
from tessera.settings import Settings, secret_value
from tessera.storage.elastic.bulk import Refresh, describe
from tessera.storage.elastic.client import ElasticConnection, open_client
from tessera.storage.elastic.generations import DEFAULT_TTL_S
from tessera.storage.elastic.homes import ById, Partitions
from tessera.storage.elastic.naming import KINDS, Names, Partitioning
from tessera.storage.elastic.partitions_ahead import CHECK_INTERVAL_S, PartitionsAhead
from tessera.storage.elastic.schema import ElasticSchema, IndexShape
from tessera.storage.elastic.stores import (
    EXPORT_PAGE_SIZE,
    ElasticEventStore,
    ElasticProfileStore,
    ElasticSessionStore,
)
from tessera.storage.elastic.wire import ElasticWire
from tessera.storage.elastic.writer import ElasticWriter

T = TypeVar("T")


class ElasticRecordBackend:
    def __init__(
        self,
        connection: ElasticConnection,
        *,
        prefix: str,
        shapes: dict[str, IndexShape],
        partitioning: dict[str, Partitioning],
        batch_size: int,
        refresh: Refresh = "false",
        refresh_intervals: dict[str, str] | None = None,
        retry_budget_s: float = 5.0,
        max_in_flight: int = 4,
        generation_ttl_s: float = DEFAULT_TTL_S,
        export_page_size: int = EXPORT_PAGE_SIZE,
        ahead_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.connection = connection
        self.names = Names(prefix)
        self.client = open_client(connection)
        # The writer's bulks and the reads by id: every request's path (wire.py).
        self.wire = ElasticWire(connection)
        self.schema = ElasticSchema(
            self.client,
            self.names,
            shapes,
            generation_ttl_s=generation_ttl_s,
            refresh_intervals=refresh_intervals,
        )
        # Which partitions each tenant has, for reads by id (homes.py).
        self.partitions = Partitions(self.client, self.names)
        by_id = ById(self.client, self.partitions, self.wire)
        self.writer = ElasticWriter(
            self.client,
            self.names,
            self.schema,
            partitioning,
            partitions=self.partitions,
            batch_size=batch_size,
            refresh=refresh,
            retry_budget_s=retry_budget_s,
            max_in_flight=max_in_flight,
            wire=self.wire,
        )
        self.events = ElasticEventStore(self.client, self.names, by_id, page_size=export_page_size)
        self.sessions = ElasticSessionStore(
            self.client, self.names, by_id, page_size=export_page_size
        )
        self.profiles = ElasticProfileStore(self.client, self.names, by_id)
        self.partitions_ahead = PartitionsAhead(
            self.client, self.names, self.schema, partitioning, interval_s=ahead_interval_s
        )

    async def create_schema(self) -> None:
        """The component templates, the index templates of the default tenant (other tenants
        get theirs at their first write), and the default tenant's partitions of now and of
        the near future (partitions_ahead.py): the first requests never wait for one."""
        await self._reaching("create the index templates", self.schema.create_schema())
        await self._reaching(
            "create the current partitions", self.partitions_ahead.prepare({DEFAULT_TENANT})
        )

    async def installed_version(self) -> int | None:
        return await self._reaching("read the schema version", self.schema.installed_version())

    async def start(self) -> None:
        """Install the templates and start the writer; StorageUnavailable when the cluster
        cannot be reached (start again once it can: nothing is left half-started)."""
        await self.create_schema()
        self.writer.start()
        self.partitions_ahead.start()

    async def close(self) -> None:
        await self.partitions_ahead.stop()
        await self.writer.stop()
        await self.wire.close()
        await self.client.close()

    async def drop_everything(self) -> None:
        """Delete every index and template of this prefix (tests and reset tooling only)."""
        await self._reaching("delete the indices", self.schema.drop_everything())

    async def _reaching(self, what: str, work: Awaitable[T]) -> T:
        try:
            return await work
        except (TransportError, ApiError) as exc:
            raise StorageUnavailable(
                f"cannot {what} in Elasticsearch at ELASTIC_HOST={self.connection.where()}: "
                f"{describe(exc)}"
            ) from exc


def build_elastic_records(settings: Settings) -> ElasticRecordBackend:
    """The record backend ELASTIC_HOST and its companion settings describe."""
    if settings.elastic_host is None:
        raise ValueError("ELASTIC_HOST is not set")
    connection = ElasticConnection.from_hosts(
        settings.elastic_host,
        username=settings.elastic_username,
        password=secret_value(settings.elastic_password),
        verify_certs=settings.elastic_verify_certs,
        request_timeout_s=settings.elastic_timeout_seconds,
        retries=settings.elastic_retries,
    )
    general = IndexShape(settings.elastic_index_shards, settings.elastic_index_replicas)

    def shape(shards: int | None, replicas: int | None) -> IndexShape:
        return IndexShape(
            shards if shards is not None else general.shards,
            replicas if replicas is not None else general.replicas,
        )

    profile = shape(settings.elastic_profile_shards, settings.elastic_profile_replicas)
    shapes = {
        "event": shape(settings.elastic_event_shards, settings.elastic_event_replicas),
        "session": shape(settings.elastic_session_shards, settings.elastic_session_replicas),
        "profile": profile,
        # One document per profile (or per merge-key value): sized like the profiles.
        "identity": profile,
        "retired": profile,
    }
    assert set(shapes) == set(KINDS)
    return ElasticRecordBackend(
        connection,
        prefix=settings.elastic_index_prefix,
        shapes=shapes,
        partitioning={
            "event": settings.event_partitioning,
            "session": settings.session_partitioning,
            "profile": settings.profile_partitioning,
        },
        batch_size=settings.writer_batch_size,
        max_in_flight=settings.elastic_bulks_in_flight,
        retry_budget_s=settings.elastic_retry_budget_seconds,
        refresh=settings.elastic_write_refresh,
        refresh_intervals={
            "event": settings.elastic_event_refresh_interval,
            "session": settings.elastic_session_refresh_interval,
            "profile": settings.elastic_profile_refresh_interval,
            # Identity links and retired profiles are read by id (realtime); searched only
            # by an erasure, which refreshes first.
            "identity": settings.elastic_profile_refresh_interval,
            "retired": settings.elastic_profile_refresh_interval,
        },
    )
