"""A benchmark run's own place on the shared services of the distributed mode.

Distributed mode keeps records in Elasticsearch, the configuration in MariaDB and locks, caches
and tokens in Redis. A benchmark run must not see anything another run, a test or a developer
left there, and must leave nothing behind: each run gets a fresh MariaDB database, and an index
prefix and a Redis key prefix nobody else uses, all named after one random tag, and
``RunPlace.clean`` removes all three (run_core.py calls it in a ``finally``, so also on Ctrl-C).

It also reads what the services did during a scenario: their processes' CPU time (they share
the machine's cores with the server and the load generator) and the run's index statistics
(documents indexed, shard refreshes), which say how hard the record writer drove Elasticsearch.

Only the standard library on the Elasticsearch side (plain HTTP); ``redis`` and ``asyncmy``,
which Tessera itself depends on, for the other two, imported only when distributed mode runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

SERVICES_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "services"
# The unprivileged development user may create databases named tessera%.
DATABASE_PREFIX = "tessera_bench_"
KEY_PREFIX = "tessera-bench-"

# Straight to the services even when HTTP_PROXY is set.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServiceError(Exception):
    """A service could not be reached or refused what the run needed; one line, no secret."""


@dataclasses.dataclass(frozen=True)
class ServiceAddresses:
    elastic_url: str
    mysql_host: str
    mysql_port: int
    mysql_user: str
    mysql_password: str = dataclasses.field(repr=False)  # never printed
    redis_host: str
    redis_port: int


@dataclasses.dataclass(frozen=True)
class RunPlace:
    """One run's database and prefixes; ``server_env`` points a server at them."""

    services: ServiceAddresses
    tag: str

    @property
    def database(self) -> str:
        return DATABASE_PREFIX + self.tag

    @property
    def prefix(self) -> str:
        return KEY_PREFIX + self.tag

    def server_env(self) -> dict[str, str]:
        s = self.services
        return {
            "ELASTIC_HOST": s.elastic_url,
            # One node: a replica could never be assigned.
            "ELASTIC_INDEX_SHARDS": "1",
            "ELASTIC_INDEX_REPLICAS": "0",
            "TESSERA_ELASTIC_INDEX_PREFIX": self.prefix,
            "MYSQL_HOST": s.mysql_host,
            "MYSQL_PORT": str(s.mysql_port),
            "MYSQL_USERNAME": s.mysql_user,
            "MYSQL_PASSWORD": s.mysql_password,
            "MYSQL_DATABASE": self.database,
            "REDIS_HOST": s.redis_host,
            "REDIS_PORT": str(s.redis_port),
            "TESSERA_REDIS_PREFIX": self.prefix,
        }

    def describe(self) -> str:
        return f"database {self.database}, index and key prefix {self.prefix}"

    def clean(self) -> list[str]:
        """Remove the indices, templates, keys and database; what could not be removed."""
        problems: list[str] = []
        for what, step in (
            ("Elasticsearch", self._drop_indices),
            ("Redis", self._drop_keys),
            ("MariaDB", self._drop_database),
        ):
            try:
                step()
            except Exception as error:  # noqa: BLE001 - report every leftover, stop at none
                problems.append(f"{what}: {type(error).__name__}: {error}"[:300])
        return problems

    def _drop_indices(self) -> None:
        url = self.services.elastic_url
        pattern = f"{self.prefix}.*"
        listing = f"{url}/_cat/indices/{pattern}?format=json&h=index&expand_wildcards=all"
        found = elastic_json("GET", listing) or []
        names = sorted(str(row["index"]) for row in found)
        for start in range(0, len(names), 50):
            elastic_json("DELETE", f"{url}/{','.join(names[start : start + 50])}")
        templates = elastic_json("GET", f"{url}/_index_template/{pattern}", missing_ok=True) or {}
        for item in templates.get("index_templates") or []:
            elastic_json("DELETE", f"{url}/_index_template/{item['name']}")
        components = elastic_json("GET", f"{url}/_component_template") or {}
        for item in components.get("component_templates") or []:
            if item["name"].startswith(self.prefix + "."):
                elastic_json("DELETE", f"{url}/_component_template/{item['name']}")

    def _drop_keys(self) -> None:
        drop_redis_keys(self.services.redis_host, self.services.redis_port, self.prefix)

    def _drop_database(self) -> None:
        mysql_statement(self.services, f"DROP DATABASE IF EXISTS `{self.database}`")


def drop_redis_keys(host: str, port: int, prefix: str) -> None:
    """Delete every key under ``prefix:``, a thousand at a time."""
    from redis import Redis

    client = Redis(host=host, port=port, socket_timeout=10)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


def new_place(services: ServiceAddresses) -> RunPlace:
    """A fresh database (created now) and unused prefixes, checked reachable first."""
    place = RunPlace(services, secrets.token_hex(5))
    health = elastic_json("GET", f"{services.elastic_url}/_cluster/health")
    if not isinstance(health, dict) or health.get("status") not in ("green", "yellow"):
        raise ServiceError(f"Elasticsearch at {services.elastic_url} is not healthy: {health!r}")
    _ping_redis(services)
    mysql_statement(
        services,
        f"CREATE DATABASE `{place.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
    )
    return place


def elastic_json(method: str, url: str, *, missing_ok: bool = False, timeout: float = 60.0) -> Any:
    req = urllib.request.Request(url, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        if missing_ok and exc.code == 404:
            return None
        path = urllib.parse.urlsplit(url).path
        raise ServiceError(f"{method} {path} answered {exc.code}") from exc
    except OSError as exc:
        raise ServiceError(f"Elasticsearch at {url.split('/_')[0]} unreachable: {exc}") from exc
    return json.loads(raw) if raw else None


def _ping_redis(services: ServiceAddresses) -> None:
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis(host=services.redis_host, port=services.redis_port, socket_timeout=5)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        raise ServiceError(
            f"Redis at {services.redis_host}:{services.redis_port} unreachable: {exc}"
        ) from exc
    finally:
        client.close()


def mysql_statement(services: ServiceAddresses, statement: str) -> None:
    import asyncmy

    async def run() -> None:
        connection = await asyncmy.connect(
            host=services.mysql_host,
            port=services.mysql_port,
            user=services.mysql_user,
            password=services.mysql_password,
            connect_timeout=10,
        )
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(statement)
        finally:
            connection.close()

    try:
        asyncio.run(run())
    except Exception as error:
        # The driver's message names the user and the statement, never the password.
        raise ServiceError(
            f"MariaDB at {services.mysql_host}:{services.mysql_port}: {error}"[:300]
        ) from error


# --------------------------------------------------------------------------- what they did


def service_pids() -> dict[str, int]:
    """Pids of the local services as `scripts/services status` reports them; those it cannot
    tell are left out (their CPU is then not reported)."""
    pids: dict[str, int] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["bash", str(SERVICES_SCRIPT), "status"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        for line in proc.stdout.splitlines():
            match = re.match(r"(\w+):\s+running\b.*\bpid (\d+)", line)
            if match:
                pids[match.group(1)] = int(match.group(2))
    if "elasticsearch" not in pids:
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            found = subprocess.run(
                ["pgrep", "-o", "-f", "org.elasticsearch"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.split()
            if found:
                pids["elasticsearch"] = int(found[0])
    return pids


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of one process, all its threads; None once it is gone or unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def services_cpu_s(pids: dict[str, int]) -> dict[str, float]:
    readings = {name: process_cpu_s(pid) for name, pid in pids.items()}
    return {name: cpu for name, cpu in readings.items() if cpu is not None}


def index_counters(place: RunPlace) -> dict[str, int]:
    """The run's documents indexed and shard refreshes so far (primaries, all its indices)."""
    url = f"{place.services.elastic_url}/{place.prefix}.*/_stats/indexing,refresh"
    stats = elastic_json("GET", f"{url}?filter_path=_all.primaries", missing_ok=True) or {}
    primaries = (stats.get("_all") or {}).get("primaries") or {}
    return {
        "docs_indexed": int((primaries.get("indexing") or {}).get("index_total", 0)),
        "shard_refreshes": int((primaries.get("refresh") or {}).get("total", 0)),
    }
