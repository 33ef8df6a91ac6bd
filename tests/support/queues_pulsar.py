"""The Pulsar queue backend for the contract suite: the real standalone broker that
``bash scripts/pulsar up`` starts on 127.0.0.1:6650 (admin API on :8080), with token auth.

Each test gets a namespace of its own (``public/tessera-test-…``: Tessera sets retention and
backlog quota per namespace, and one test's tiny quota must not refuse another's producers) and
in it a partitioned topic named after the test; both are deleted when the test ends. Nothing
touches ``public/default``. The admin token is read from the script's cache folder, or from
``TESSERA_TEST_PULSAR_TOKEN``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from tessera.queue.pulsar import PulsarIngestQueue
from tests.support.services import service_missing

PULSAR_URL = "pulsar://127.0.0.1:6650"
PULSAR_ADMIN_URL = "http://127.0.0.1:8080"
NAMESPACE_PREFIX = "public/tessera-test-"


def token_file() -> Path:
    cache = os.environ.get("TESSERA_SERVICES_CACHE") or str(Path.home() / ".cache/tessera-services")
    return Path(cache) / "pulsar" / "auth" / "admin.token"


def _not_available(why: str) -> None:
    service_missing(
        f"PULSAR NOT AVAILABLE at 127.0.0.1:6650 ({why}); start it with `bash scripts/pulsar up`"
    )


def admin_token() -> str:
    """The super-user token, or the test is skipped, loudly, saying where it was looked for."""
    token = os.environ.get("TESSERA_TEST_PULSAR_TOKEN", "").strip()
    if not token:
        try:
            token = token_file().read_text().strip()
        except OSError:
            token = ""
    if not token:
        _not_available(f"no admin token in TESSERA_TEST_PULSAR_TOKEN or {token_file()}")
    return token


def admin_client(token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=PULSAR_ADMIN_URL, headers=headers, timeout=30.0)


def topic_path(topic: str, namespace: str) -> str:
    return f"/admin/v2/persistent/{namespace}/{quote(topic)}"


async def reachable_token() -> str:
    """The admin token of a broker that answered its health check, or a loud skip."""
    token = admin_token()
    async with admin_client(token) as admin:
        try:
            response = await admin.get("/admin/v2/brokers/health")
        except httpx.HTTPError as exc:
            _not_available(f"admin API at {PULSAR_ADMIN_URL}: {type(exc).__name__}")
    if response.status_code in (401, 403):
        _not_available(f"the broker refused the token from {token_file()}")
    if response.text != "ok":
        _not_available(f"health check answered {response.status_code}")
    return token


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unique_topic(name: str, place: object) -> str:
    # Pulsar keeps "-partition-" for the partitions' own names.
    cleaned = "".join(c if c.isalnum() else "-" for c in name).replace("partition", "part")
    cleaned = cleaned[-50:].strip("-")
    digest = hashlib.sha256(str(place).encode()).hexdigest()[:10]
    return f"tessera-test-{cleaned}-{digest}"


@dataclass
class PulsarQueueFactory:
    token: str
    topic: str
    partitions: int
    namespace: str
    backend: str = "pulsar"

    def open(self, *, max_backlog_mb: int = 1024) -> PulsarIngestQueue:
        return PulsarIngestQueue(
            PULSAR_URL,
            admin_url=PULSAR_ADMIN_URL,
            token=self.token,
            namespace=self.namespace,
            topic=self.topic,
            partitions=self.partitions,
            max_backlog_mb=max_backlog_mb,
        )

    def with_token(self, token: str | None) -> PulsarIngestQueue:
        """A queue object on this topic that presents another token (or none)."""
        return PulsarIngestQueue(
            PULSAR_URL,
            admin_url=PULSAR_ADMIN_URL,
            token=token,
            namespace=self.namespace,
            topic=self.topic,
            partitions=self.partitions,
            publish_timeout=3.0,
        )

    def unreachable(self) -> PulsarIngestQueue:
        return PulsarIngestQueue(
            f"pulsar://127.0.0.1:{_free_port()}",
            admin_url=f"http://127.0.0.1:{_free_port()}",
            token=self.token,
            namespace=self.namespace,
            topic=self.topic,
            partitions=self.partitions,
            publish_timeout=2.0,
        )

    def environment(self) -> dict[str, str]:
        return {
            "TESSERA_QUEUE": "pulsar",
            "PULSAR_HOST": PULSAR_URL,
            "PULSAR_ADMIN_URL": PULSAR_ADMIN_URL,
            "PULSAR_AUTH_TOKEN": self.token,
            "PULSAR_NAMESPACE": self.namespace,
            "TESSERA_QUEUE_TOPIC": self.topic,
            "TESSERA_QUEUE_PARTITIONS": str(self.partitions),
        }


@asynccontextmanager
async def pulsar_queue(
    name: str, place: Path, partitions: int
) -> AsyncIterator[PulsarQueueFactory]:
    token = await reachable_token()
    namespace = NAMESPACE_PREFIX + secrets.token_hex(5)
    async with admin_client(token) as admin:
        response = await admin.put(f"/admin/v2/namespaces/{namespace}")
        assert response.status_code == 204, response.text
    factory = PulsarQueueFactory(
        token=token,
        topic=unique_topic(name, place),
        partitions=partitions,
        namespace=namespace,
    )
    try:
        yield factory
    finally:
        async with admin_client(token) as admin:
            # force: consumers a failed test left connected do not keep the topic alive.
            response = await admin.delete(
                f"{topic_path(factory.topic, namespace)}/partitions", params={"force": "true"}
            )
            assert response.status_code in (204, 404), response.text
            await _delete_namespace(admin, namespace)


async def _delete_namespace(admin: httpx.AsyncClient, namespace: str) -> None:
    """The broker may still be unloading the topic a moment after deleting it."""
    for _ in range(20):
        response = await admin.delete(f"/admin/v2/namespaces/{namespace}")
        if response.status_code in (204, 404):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"namespace {namespace} not deleted: {response.text}")
