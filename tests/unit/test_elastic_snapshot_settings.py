"""The snapshot repository the TESSERA_SNAPSHOT_* settings describe, checked before any request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tessera.errors import ConfigurationError
from tessera.settings import load_settings
from tessera.storage.elastic import maintenance
from tessera.storage.elastic.naming import Names
from tessera.storage.elastic.snapshots import (
    check_snapshot_name,
    fs_repository,
    s3_repository,
    snapshot_name,
)


def test_fs_defaults_to_a_folder_named_after_the_repository() -> None:
    settings = load_settings(ELASTIC_HOST="http://127.0.0.1:9200")
    repository = maintenance.repository(settings)
    assert repository.name == "tessera-backups"
    assert (repository.type, repository.settings) == ("fs", {"location": "tessera-backups"})
    assert fs_repository("r", "/srv/es-repo/tessera").settings == {
        "location": "/srv/es-repo/tessera"
    }


@pytest.mark.parametrize("location", ["../outside", "a/../../b", "  "])
def test_fs_refuses_a_location_that_climbs_out(location: str) -> None:
    with pytest.raises(ConfigurationError, match="TESSERA_SNAPSHOT_LOCATION"):
        fs_repository("r", location)


def test_s3_from_settings() -> None:
    settings = load_settings(
        ELASTIC_HOST="http://127.0.0.1:9200",
        TESSERA_SNAPSHOT_TYPE="s3",
        TESSERA_SNAPSHOT_S3_BUCKET="acme-backups",
        TESSERA_SNAPSHOT_S3_REGION="eu-west-1",
        TESSERA_SNAPSHOT_S3_ENDPOINT="https://minio.internal:9000/",
        TESSERA_SNAPSHOT_S3_BASE_PATH="/tessera/prod/",
        TESSERA_SNAPSHOT_S3_CLIENT="backups",
    )
    repository = maintenance.repository(settings)
    assert repository.type == "s3"
    assert repository.settings == {
        "bucket": "acme-backups",
        "client": "backups",
        "base_path": "tessera/prod",
    }
    # Endpoint and region are settings of the nodes' S3 client, not of the repository.
    assert repository.node_settings == {
        "s3.client.backups.endpoint": "https://minio.internal:9000",
        "s3.client.backups.region": "eu-west-1",
    }


def test_s3_refuses_a_missing_bucket() -> None:
    settings = load_settings(ELASTIC_HOST="http://127.0.0.1:9200", TESSERA_SNAPSHOT_TYPE="s3")
    with pytest.raises(ConfigurationError, match="TESSERA_SNAPSHOT_S3_BUCKET: required"):
        maintenance.repository(settings)


@pytest.mark.parametrize("bucket", ["ab", "Upper-Case", "under_score", "-dash", "a..b", "x" * 64])
def test_s3_refuses_a_bad_bucket(bucket: str) -> None:
    with pytest.raises(ConfigurationError, match="not a bucket name"):
        s3_repository("r", bucket=bucket)


@pytest.mark.parametrize(
    "endpoint",
    [
        "ftp://minio:21",
        "http://",
        "https://minio.internal/some/path",
        "http://user:secret@minio:9000",
        "minio:99999",
        "minio:port",
        "http://minio?x=1",
        "bad host",
    ],
)
def test_s3_refuses_a_bad_endpoint(endpoint: str) -> None:
    with pytest.raises(ConfigurationError, match="TESSERA_SNAPSHOT_S3_ENDPOINT"):
        s3_repository("r", bucket="acme-backups", endpoint=endpoint)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "s3.eu-west-1.amazonaws.com"])
def test_s3_accepts_an_endpoint(endpoint: str) -> None:
    repository = s3_repository("r", bucket="acme-backups", endpoint=endpoint)
    assert repository.node_settings == {"s3.client.default.endpoint": endpoint}


def test_s3_refuses_bad_region_and_base_path() -> None:
    with pytest.raises(ConfigurationError, match="REGION"):
        s3_repository("r", bucket="acme-backups", region="EU West")
    with pytest.raises(ConfigurationError, match="BASE_PATH"):
        s3_repository("r", bucket="acme-backups", base_path="a/../b")


def test_snapshot_names() -> None:
    name = snapshot_name(Names("tessera"), datetime(2024, 3, 7, 12, 30, 5, tzinfo=UTC))
    assert name == "tessera-2024.03.07-123005"
    assert check_snapshot_name(name) == name
    for bad in ("Upper", "with space", "_start", "a/b", ""):
        with pytest.raises(ConfigurationError):
            check_snapshot_name(bad)


def test_not_distributed_without_elastic_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELASTIC_HOST", raising=False)
    with pytest.raises(maintenance.NotDistributed, match="distributed mode only"):
        maintenance.connection(load_settings())
