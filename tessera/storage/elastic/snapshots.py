"""Backups of one installation's indices as Elasticsearch snapshots, and restoring them.

What a snapshot holds: every index of this prefix (open or closed, with the read aliases each
partition carries) and nothing of the cluster's global state. Snapshots are taken and restored
with `include_global_state: false`, and the templates are written again from the schema after a
restore instead, because restoring global state REPLACES the whole cluster's composable index
templates, component templates, persistent settings, ILM policies and ingest pipelines with
the snapshot's: on a cluster several installations share (the reason the prefix exists) that
would delete theirs. The templates are derived entirely from this code and the settings
(ElasticSchema), so writing them again is exact, and a snapshot of an older Tessera comes back
with the templates of the running one. The schema version the snapshot was taken with is kept
in its metadata and compared on restore.

Restore expects the prefix to be empty (a new cluster, or after a loss); `replace=True` first
deletes every index of the prefix, so the installation returns to the snapshot's moment as a
whole, rather than mixing a restored March with a live April. Index names are kept as they were
(no renaming), so a snapshot can only come back under the prefix it was taken of. Stop the
Tessera servers writing to this prefix during a restore: a write that lands between the
deletion and the templates coming back would create a partition without mapping or alias.

Repositories: `fs` (a folder every node sees, inside their `path.repo`) and `s3`. For `s3` only
`bucket`, `client` and `base_path` are repository settings; the endpoint, region and
credentials are settings of the S3 client on every node (elasticsearch.yml and keystore), which
no API can set: Tessera validates them, compares them with what the nodes report and says which
lines are missing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import msgspec
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from tessera.errors import ConfigurationError, Conflict, NotFound, StorageUnavailable
from tessera.model.common import utcnow
from tessera.storage.elastic.inventory import list_index_names, recognise
from tessera.storage.elastic.naming import Names
from tessera.storage.elastic.schema import SCHEMA_VERSION, ElasticSchema

RepositoryType = Literal["fs", "s3"]

_REPOSITORY_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_SNAPSHOT_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,199}$")
# AWS's rules for bucket names (3-63 characters, no upper case, no underscore, dots allowed
# between labels), which S3-compatible services follow too.
_BUCKET: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$")
_CLIENT: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_HOST: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$")
DELETE_BATCH = 50


class Repository(msgspec.Struct, frozen=True):
    """A repository as Tessera registers it."""

    name: str
    type: RepositoryType
    settings: dict[str, str]
    # s3: lines every node needs in elasticsearch.yml; the API cannot set them.
    node_settings: dict[str, str] = msgspec.field(default_factory=dict)


class SnapshotInfo(msgspec.Struct, frozen=True):
    name: str
    state: str
    prefix: str | None
    schema_version: int | None
    started: datetime | None
    ended: datetime | None
    indices: list[str]
    shards_total: int
    shards_failed: int
    failures: list[str]


class RestoreReport(msgspec.Struct, frozen=True):
    snapshot: str
    indices: list[str]
    tenants: list[str]
    replaced: list[str]
    warnings: list[str]


# --- repositories ----------------------------------------------------------------------------


def fs_repository(name: str, location: str | None) -> Repository:
    """`location` absolute (inside path.repo) or relative to the first path.repo; None: `name`."""
    _check_repository_name(name)
    where = (location or name).strip()
    if not where or ".." in PurePosixPath(where).parts:
        raise ConfigurationError(
            f"TESSERA_SNAPSHOT_LOCATION: {location!r} is not a usable folder (empty or with '..')"
        )
    return Repository(name=name, type="fs", settings={"location": where})


def s3_repository(
    name: str,
    *,
    bucket: str | None,
    region: str | None = None,
    endpoint: str | None = None,
    base_path: str | None = None,
    client: str = "default",
) -> Repository:
    _check_repository_name(name)
    if not bucket:
        raise ConfigurationError("TESSERA_SNAPSHOT_S3_BUCKET: required for an s3 repository")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigurationError(
            f"TESSERA_SNAPSHOT_S3_BUCKET: {bucket!r} is not a bucket name (3-63 lower-case "
            "letters, digits, '-' and '.')"
        )
    if not _CLIENT.match(client):
        raise ConfigurationError(f"TESSERA_SNAPSHOT_S3_CLIENT: {client!r} is not a client name")
    settings = {"bucket": bucket, "client": client}
    if base_path:
        settings["base_path"] = _check_base_path(base_path)
    node_settings: dict[str, str] = {}
    if endpoint:
        node_settings[f"s3.client.{client}.endpoint"] = _check_endpoint(endpoint)
    if region:
        if not _REGION.match(region):
            raise ConfigurationError(f"TESSERA_SNAPSHOT_S3_REGION: {region!r} is not a region")
        node_settings[f"s3.client.{client}.region"] = region
    return Repository(name=name, type="s3", settings=settings, node_settings=node_settings)


def _check_repository_name(name: str) -> None:
    if not _REPOSITORY_NAME.match(name):
        raise ConfigurationError(
            f"TESSERA_SNAPSHOT_REPOSITORY: {name!r}: use lower-case letters, digits, '-', '_'"
        )


def _check_base_path(base_path: str) -> str:
    path = base_path.strip().strip("/")
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") for part in parts):
        raise ConfigurationError(
            f"TESSERA_SNAPSHOT_S3_BASE_PATH: {base_path!r} is not a folder like 'tessera/prod'"
        )
    return path


def _check_endpoint(endpoint: str) -> str:
    """An http(s) URL or a bare host[:port], without path, query or credentials."""
    text = endpoint.strip()
    problem = f"TESSERA_SNAPSHOT_S3_ENDPOINT: {endpoint!r} is not an endpoint URL"
    parts = urlsplit(text if "://" in text else "//" + text)
    try:
        port = parts.port  # ValueError for a port that is not a number or out of range
    except ValueError:
        raise ConfigurationError(problem + " (bad port)") from None
    if "://" in text and parts.scheme not in ("http", "https"):
        raise ConfigurationError(problem + " (use http:// or https://)")
    host = parts.netloc.rpartition("@")[2]
    if port is not None:
        host = host.rpartition(":")[0]
    if parts.username or parts.password:
        raise ConfigurationError(problem + " (credentials belong in the nodes' keystore)")
    if not host or not _HOST.match(host) or parts.path not in ("", "/") or parts.query:
        raise ConfigurationError(problem + " (expected e.g. https://minio.internal:9000)")
    return text.rstrip("/")


async def register_repository(client: AsyncElasticsearch, repository: Repository) -> list[str]:
    """Create or update the repository (the cluster verifies every node can write it).

    Returns warnings: for s3, the node settings that are missing or differ on some node.
    """
    if repository.type == "fs":
        await _check_fs_location(client, repository.settings["location"])
    try:
        await client.snapshot.create_repository(
            name=repository.name,
            repository={"type": repository.type, "settings": repository.settings},
            verify=True,
        )
    except ApiError as error:
        raise StorageUnavailable(
            f"Elasticsearch refused the {repository.type} repository {repository.name!r}: "
            f"{_reason(error)}"
        ) from None
    return await _node_setting_warnings(client, repository)


async def registered_repository(client: AsyncElasticsearch, name: str) -> dict[str, Any] | None:
    """The repository as the cluster has it ({"type": …, "settings": …}), None when absent."""
    try:
        answer = await client.snapshot.get_repository(name=name)
    except NotFoundError:
        return None
    found = answer.body.get(name)
    return dict(found) if found is not None else None


async def _path_repo(client: AsyncElasticsearch) -> dict[str, list[str]]:
    answer = await client.nodes.info(metric="settings", filter_path="nodes.*.name,nodes.*.settings")
    found = {}
    for node in (answer.body.get("nodes") or {}).values():
        value = ((node.get("settings") or {}).get("path") or {}).get("repo") or []
        found[str(node.get("name"))] = [value] if isinstance(value, str) else list(value)
    return found


async def _check_fs_location(client: AsyncElasticsearch, location: str) -> None:
    """Say plainly what Elasticsearch would only report as a verification failure."""
    for node, roots in (await _path_repo(client)).items():
        if not roots:
            raise ConfigurationError(
                f"node {node} has no path.repo: add the snapshot folder to path.repo in its "
                "elasticsearch.yml (an fs repository must be inside it) and restart it"
            )
        path = PurePosixPath(location)
        if path.is_absolute() and not any(path.is_relative_to(root) for root in roots):
            raise ConfigurationError(
                f"TESSERA_SNAPSHOT_LOCATION: {location} is not inside path.repo "
                f"{roots} of node {node}"
            )


async def _node_setting_warnings(client: AsyncElasticsearch, repository: Repository) -> list[str]:
    if not repository.node_settings:
        return []
    answer = await client.nodes.info(metric="settings", filter_path="nodes.*.name,nodes.*.settings")
    warnings = []
    for node in (answer.body.get("nodes") or {}).values():
        flat = _flatten(node.get("settings") or {})
        for key, wanted in repository.node_settings.items():
            have = flat.get(key)
            if have != wanted:
                shown = "unset" if have is None else repr(have)
                warnings.append(
                    f"node {node.get('name')}: {key} is {shown}; add `{key}: {wanted}` to its "
                    "elasticsearch.yml"
                )
    return warnings


def _flatten(tree: dict[str, Any], head: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{head}.{key}" if head else key
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = str(value)
    return flat


# --- snapshots -------------------------------------------------------------------------------


def snapshot_name(names: Names, now: datetime) -> str:
    return f"{names.prefix}-{now.astimezone(UTC):%Y.%m.%d-%H%M%S}"


def check_snapshot_name(name: str) -> str:
    if not _SNAPSHOT_NAME.match(name):
        raise ConfigurationError(
            f"snapshot name {name!r}: use lower-case letters, digits, '.', '-' and '_'"
        )
    return name


async def start_snapshot(
    client: AsyncElasticsearch, repository: str, names: Names, name: str | None = None
) -> str:
    """Start a snapshot of every index of the prefix; returns its name (wait_for_snapshot)."""
    snapshot = check_snapshot_name(name or snapshot_name(names, utcnow()))
    indices = await list_index_names(client, names)
    if not indices:
        raise NotFound(f"no index of prefix {names.prefix!r} to back up")
    try:
        await client.snapshot.create(
            repository=repository,
            snapshot=snapshot,
            indices=indices,
            include_global_state=False,
            expand_wildcards="all",
            metadata={
                "tessera_prefix": names.prefix,
                "schema_version": SCHEMA_VERSION,
                "taken_by": "tessera backup create",
            },
            wait_for_completion=False,
        )
    except ApiError as error:
        raise _snapshot_error(error, repository, snapshot) from None
    return snapshot


ProgressCallback = Callable[[int, int], None]


async def wait_for_snapshot(
    client: AsyncElasticsearch,
    repository: str,
    snapshot: str,
    *,
    on_progress: ProgressCallback | None = None,
    poll_s: float = 0.25,
    timeout_s: float = 3600.0,
) -> SnapshotInfo:
    """Until the snapshot is no longer in progress; on_progress(shards done, shards total)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        info = await get_snapshot(client, repository, snapshot)
        if info.state != "IN_PROGRESS":
            if on_progress is not None:
                on_progress(info.shards_total - info.shards_failed, info.shards_total)
            return info
        if on_progress is not None:
            status = await client.snapshot.status(repository=repository, snapshot=snapshot)
            for item in status.get("snapshots") or []:
                stats = item.get("shards_stats") or {}
                on_progress(int(stats.get("done", 0)), int(stats.get("total", 0)))
        if loop.time() > deadline:
            raise StorageUnavailable(f"snapshot {snapshot} still in progress after {timeout_s} s")
        await asyncio.sleep(poll_s)


async def get_snapshot(client: AsyncElasticsearch, repository: str, snapshot: str) -> SnapshotInfo:
    try:
        answer = await client.snapshot.get(repository=repository, snapshot=snapshot)
    except ApiError as error:
        raise _snapshot_error(error, repository, snapshot) from None
    found = answer.get("snapshots") or []
    if not found:
        raise NotFound(f"no snapshot {snapshot!r} in repository {repository!r}")
    return _info(found[0])


async def list_snapshots(client: AsyncElasticsearch, repository: str) -> list[SnapshotInfo]:
    """Every snapshot of the repository, oldest first (of any prefix: see `prefix`)."""
    try:
        answer = await client.snapshot.get(
            repository=repository, snapshot="*", sort="start_time", order="asc"
        )
    except ApiError as error:
        raise _snapshot_error(error, repository, "*") from None
    return [_info(item) for item in answer.get("snapshots") or []]


def _info(item: dict[str, Any]) -> SnapshotInfo:
    metadata = item.get("metadata") or {}
    shards = item.get("shards") or {}
    version = metadata.get("schema_version")
    return SnapshotInfo(
        name=str(item["snapshot"]),
        state=str(item.get("state", "UNKNOWN")),
        prefix=metadata.get("tessera_prefix"),
        schema_version=int(version) if version is not None else None,
        started=_moment(item.get("start_time_in_millis")),
        ended=_moment(item.get("end_time_in_millis")),
        indices=sorted(item.get("indices") or []),
        shards_total=int(shards.get("total", 0)),
        shards_failed=int(shards.get("failed", 0)),
        failures=[str(failure.get("reason", failure)) for failure in item.get("failures") or []],
    )


def _moment(millis: Any) -> datetime | None:
    if not millis:
        return None
    return datetime.fromtimestamp(int(millis) / 1000, tz=UTC)


async def restore_snapshot(
    client: AsyncElasticsearch,
    repository: str,
    snapshot: str,
    names: Names,
    schema: ElasticSchema,
    *,
    replace: bool = False,
) -> RestoreReport:
    """Bring the prefix's indices back as the snapshot has them, then their templates."""
    info = await get_snapshot(client, repository, snapshot)
    if info.state != "SUCCESS":
        raise Conflict(f"snapshot {snapshot} is {info.state}, not SUCCESS; it cannot be restored")
    if info.prefix is not None and info.prefix != names.prefix:
        raise Conflict(
            f"snapshot {snapshot} holds prefix {info.prefix!r}, this installation uses "
            f"{names.prefix!r}; restore it with TESSERA_ELASTIC_INDEX_PREFIX={info.prefix}"
        )
    ours = [name for name in info.indices if name.startswith(names.prefix + ".")]
    if not ours:
        raise NotFound(f"snapshot {snapshot} holds no index of prefix {names.prefix!r}")
    warnings = []
    if info.schema_version is not None and info.schema_version != SCHEMA_VERSION:
        warnings.append(
            f"snapshot taken with schema version {info.schema_version}, this Tessera writes "
            f"version {SCHEMA_VERSION}"
        )
    existing = await list_index_names(client, names)
    if existing and not replace:
        shown = ", ".join(existing[:5]) + (" …" if len(existing) > 5 else "")
        raise Conflict(
            f"{len(existing)} indices of prefix {names.prefix!r} exist ({shown}); restore needs "
            "an empty prefix, or replace=True (--replace) to delete them first"
        )
    for start in range(0, len(existing), DELETE_BATCH):
        await client.indices.delete(index=",".join(existing[start : start + DELETE_BATCH]))
    try:
        await client.snapshot.restore(
            repository=repository,
            snapshot=snapshot,
            indices=ours,
            include_global_state=False,
            include_aliases=True,
            wait_for_completion=True,
        )
    except ApiError as error:
        raise _snapshot_error(error, repository, snapshot) from None
    tenants = sorted({known.tenant for name in ours if (known := recognise(names, name))})
    await schema.create_schema()
    await schema.ensure_tenants(set(tenants))
    # Restored means readable: every primary started (yellow). Slow recoveries are reported,
    # not failed: the data is coming back, and waiting again is all there is to do.
    try:
        await client.cluster.health(
            index=names.everything(), wait_for_status="yellow", timeout="60s"
        )
    except ApiError as error:
        if error.meta.status != 408:
            raise
        warnings.append(
            "not every primary shard had started after 60 s; watch GET _cluster/health "
            "(the restore goes on in the cluster)"
        )
    return RestoreReport(
        snapshot=snapshot, indices=ours, tenants=tenants, replaced=existing, warnings=warnings
    )


def _reason(error: ApiError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    cause = body.get("error") or {}
    if isinstance(cause, dict):
        deeper = cause.get("caused_by") or {}
        reason = cause.get("reason") or error.message
        if isinstance(deeper, dict) and deeper.get("reason"):
            reason = f"{reason}: {deeper['reason']}"
        return str(reason)
    return str(cause)


def _snapshot_error(error: ApiError, repository: str, snapshot: str) -> Exception:
    reason = _reason(error)
    if error.meta.status == 404:
        return NotFound(f"repository {repository!r} / snapshot {snapshot!r}: {reason}")
    if error.meta.status in (400, 409, 503) and "exist" in reason:
        return Conflict(f"snapshot {snapshot!r}: {reason}")
    return StorageUnavailable(f"snapshot {snapshot!r} in {repository!r}: {reason}")
