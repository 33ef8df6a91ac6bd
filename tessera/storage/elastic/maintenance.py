"""What the maintenance commands (retention, backups) take from Settings.

They run outside the server, against the cluster ELASTIC_HOST names; without it Tessera keeps
its records in the embedded SQLite file, which has no indices to expire or snapshot (copy the
data folder instead), so they refuse with NotDistributed.
"""

from __future__ import annotations

from datetime import timedelta

from tessera.settings import Settings, secret_value
from tessera.storage.elastic.client import ElasticConnection
from tessera.storage.elastic.mode import NotDistributed as NotDistributed
from tessera.storage.elastic.mode import elastic_hosts
from tessera.storage.elastic.naming import Names
from tessera.storage.elastic.schema import IndexShape
from tessera.storage.elastic.snapshots import Repository, fs_repository, s3_repository


def connection(settings: Settings) -> ElasticConnection:
    return ElasticConnection.from_hosts(
        elastic_hosts(settings),
        username=settings.elastic_username,
        password=secret_value(settings.elastic_password),
        verify_certs=settings.elastic_verify_certs,
    )


def names(settings: Settings) -> Names:
    return Names(settings.elastic_index_prefix)


def shapes(settings: Settings) -> dict[str, IndexShape]:
    """Shards and replicas per kind; identity and retired profiles live beside the profiles."""
    shards, replicas = settings.elastic_index_shards, settings.elastic_index_replicas

    def shape(kind_shards: int | None, kind_replicas: int | None) -> IndexShape:
        return IndexShape(
            shards=kind_shards if kind_shards is not None else shards,
            replicas=kind_replicas if kind_replicas is not None else replicas,
        )

    profile = shape(settings.elastic_profile_shards, settings.elastic_profile_replicas)
    return {
        "event": shape(settings.elastic_event_shards, settings.elastic_event_replicas),
        "session": shape(settings.elastic_session_shards, settings.elastic_session_replicas),
        "profile": profile,
        "identity": profile,
        "retired": profile,
    }


def retention_ages(settings: Settings) -> dict[str, timedelta]:
    """How long each partitioned kind is kept; a kind left out is kept forever."""
    days = {
        "event": settings.retention_event_days,
        "session": settings.retention_session_days,
        "profile": settings.retention_profile_days,
    }
    return {kind: timedelta(days=value) for kind, value in days.items() if value is not None}


def repository(settings: Settings) -> Repository:
    """The snapshot repository the TESSERA_SNAPSHOT_* settings describe (validated)."""
    if settings.snapshot_type == "s3":
        return s3_repository(
            settings.snapshot_repository,
            bucket=settings.snapshot_s3_bucket,
            region=settings.snapshot_s3_region,
            endpoint=settings.snapshot_s3_endpoint,
            base_path=settings.snapshot_s3_base_path,
            client=settings.snapshot_s3_client,
        )
    return fs_repository(settings.snapshot_repository, settings.snapshot_location)
