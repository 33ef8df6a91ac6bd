"""The one module that knows which storage backends exist and builds them from settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.core.cache import RecordCache, RecordCachePort
from tessera.core.locks import KeyedLocks, Locks
from tessera.core.throttle import BucketStore, InProcessBuckets
from tessera.model.destination import Destination
from tessera.model.profile import Profile
from tessera.model.segment import Segment
from tessera.model.session import Session
from tessera.model.workflow import Rule, Workflow
from tessera.settings import Settings
from tessera.storage.automation_ports import (
    DocumentStore,
    KeyValueStore,
    OutboxStore,
    ScheduleStore,
)
from tessera.storage.config_database import config_engine, config_schema_store
from tessera.storage.dedup import DedupKeys, InProcessDedupKeys
from tessera.storage.extras import ELASTIC, REDIS, require
from tessera.storage.ports import (
    ConsentTypeStore,
    ErasedProfiles,
    EventStore,
    ProfileStore,
    RecordWriter,
    SchemaStore,
    SessionStore,
    SharedValues,
    SourceStore,
    TokenStore,
    UserStore,
)
from tessera.storage.processing_ports import ProcessingRuleStore
from tessera.storage.sql.consents import SqlConsentTypeStore
from tessera.storage.sql.destinations import SqlOutboxStore, sql_destination_store
from tessera.storage.sql.memory import SqlKeyValueStore
from tessera.storage.sql.processing import SqlProcessingRuleStore
from tessera.storage.sql.segments import SqlSegmentStore
from tessera.storage.sql.stores import (
    SqlErasedProfiles,
    SqlSourceStore,
    SqlTokenStore,
    SqlUserStore,
)
from tessera.storage.sql.worker_records import SqlDeadLetterStore, SqlWorkerBeats
from tessera.storage.sql.workflows import SqlScheduleStore, rule_store, workflow_store
from tessera.storage.sqlite.backend import SqliteRecordBackend
from tessera.storage.worker_ports import DeadLetterStore, WorkerBeats

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from tessera.storage.elastic.backend import ElasticRecordBackend
    from tessera.storage.redis.services import RedisServices

# A distributed backend's modules (and its client library) are imported only where the
# settings choose it (storage/extras.py): the embedded mode loads none of them.


class RecordBackend(Protocol):
    """The hot-record ports of one backend, started and stopped together."""

    @property
    def writer(self) -> RecordWriter: ...
    @property
    def events(self) -> EventStore: ...
    @property
    def sessions(self) -> SessionStore: ...
    @property
    def profiles(self) -> ProfileStore: ...

    async def create_schema(self) -> None: ...

    async def installed_version(self) -> int | None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def build_records(settings: Settings) -> RecordBackend:
    """Elasticsearch when ELASTIC_HOST is set, else the embedded SQLite store."""
    if settings.elastic_host is not None:
        return build_elastic(settings)
    return SqliteRecordBackend(
        settings.data_dir,
        batch_size=settings.writer_batch_size,
        flush_interval_s=settings.writer_flush_interval_ms / 1000,
        synchronous=settings.sqlite_synchronous,
        readers=settings.sqlite_readers,
    )


@dataclass
class Storage:
    """Every port the rest of Tessera uses, already wired to concrete backends."""

    writer: RecordWriter
    events: EventStore
    sessions: SessionStore
    profiles: ProfileStore
    sources: SourceStore
    erased_profiles: ErasedProfiles
    users: UserStore
    tokens: TokenStore
    record_schema: SchemaStore
    config_schema: SchemaStore
    shared_values: SharedValues
    consent_types: ConsentTypeStore
    processing_rules: ProcessingRuleStore
    destinations: DocumentStore[Destination]
    outbox: OutboxStore
    segments: DocumentStore[Segment]
    rules: DocumentStore[Rule]
    workflows: DocumentStore[Workflow]
    schedules: ScheduleStore
    memory: KeyValueStore
    # One writer per profile, and the profile/session caches: in-process in the embedded
    # mode, in Redis (shared by every process) when REDIS_HOST is set.
    locks: Locks
    profile_cache: RecordCachePort[Profile]
    session_cache: RecordCachePort[Session]
    dedup: DedupKeys
    # Throttles' token buckets (core/throttle.py): shared in Redis when REDIS_HOST is set.
    buckets: BucketStore
    # Queue workers' dead letters and heartbeats (configuration database).
    dead_letters: DeadLetterStore
    worker_beats: WorkerBeats
    _records: RecordBackend
    _config_engine: AsyncEngine
    _redis: RedisServices | None = None

    async def install_schema(self) -> None:
        await self.config_schema.create_schema()
        await self.record_schema.create_schema()

    async def start(self) -> None:
        if self._redis is not None:
            await self._redis.start()
        await self._records.start()

    @property
    def redis_client(self) -> Redis | None:
        """The Redis client of the shared services (the Redis Streams queue reuses it)."""
        return self._redis.client if self._redis is not None else None

    async def close(self) -> None:
        await self._records.close()
        await self._config_engine.dispose()
        if self._redis is not None:
            await self._redis.close()


def build_elastic(settings: Settings) -> ElasticRecordBackend:
    """The records on the Elasticsearch cluster of ELASTIC_HOST."""
    require(ELASTIC)
    from tessera.storage.elastic.backend import build_elastic_records

    return build_elastic_records(settings)


def build_shared_services(settings: Settings) -> RedisServices:
    """The Redis-backed locks, caches, tokens and memory of REDIS_HOST."""
    require(REDIS)
    from tessera.storage.redis.services import build_redis

    return build_redis(settings)


def build_storage(settings: Settings) -> Storage:
    records = build_records(settings)
    # MYSQL_HOST set: the pooled MySQL/MariaDB engine and its migrated schema; else SQLite.
    engine = config_engine(settings)
    config_schema = config_schema_store(engine, settings)
    # REDIS_HOST set: locks, caches, tokens, workflow memory and dedup keys shared in Redis.
    redis = build_shared_services(settings) if settings.redis_host is not None else None
    return Storage(
        writer=records.writer,
        events=records.events,
        sessions=records.sessions,
        profiles=records.profiles,
        sources=SqlSourceStore(engine),
        erased_profiles=SqlErasedProfiles(engine),
        users=SqlUserStore(engine),
        tokens=redis.tokens if redis else SqlTokenStore(engine),
        record_schema=records,
        config_schema=config_schema,
        shared_values=config_schema,
        consent_types=SqlConsentTypeStore(engine),
        processing_rules=SqlProcessingRuleStore(engine),
        destinations=sql_destination_store(engine),
        outbox=SqlOutboxStore(engine),
        segments=SqlSegmentStore(engine),
        rules=rule_store(engine),
        workflows=workflow_store(engine),
        schedules=SqlScheduleStore(engine),
        memory=redis.memory if redis else SqlKeyValueStore(engine),
        locks=redis.locks if redis else KeyedLocks(),
        profile_cache=redis.profile_cache
        if redis
        else RecordCache(
            Profile,
            max_entries=settings.cache_max_entries,
            ttl_s=settings.keep_profile_in_cache_for,
            max_bytes=settings.cache_max_bytes,
            max_entry_bytes=settings.cache_max_entry_bytes,
        ),
        session_cache=redis.session_cache
        if redis
        else RecordCache(
            Session,
            max_entries=settings.cache_max_entries,
            ttl_s=settings.keep_session_in_cache_for,
            max_bytes=settings.cache_max_bytes,
            max_entry_bytes=settings.cache_max_entry_bytes,
        ),
        dedup=redis.dedup if redis else InProcessDedupKeys(),
        buckets=redis.buckets if redis else InProcessBuckets(),
        dead_letters=SqlDeadLetterStore(engine),
        worker_beats=SqlWorkerBeats(engine),
        _redis=redis,
        _records=records,
        _config_engine=engine,
    )
