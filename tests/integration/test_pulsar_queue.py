"""The Pulsar queue against the real standalone broker (``bash scripts/pulsar up``), beyond the
contract suite: token authentication, the namespace of Tessera's own and its policies (never
``public/default``), and the topic's partitions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tessera.errors import ConfigurationError
from tessera.queue.ports import QueueMessage, QueueRetention, QueueUnavailable
from tessera.queue.pulsar import PulsarIngestQueue
from tests.support.queues import risks_settled
from tests.support.queues_pulsar import (
    PULSAR_ADMIN_URL,
    PULSAR_URL,
    PulsarQueueFactory,
    admin_client,
    pulsar_queue,
    topic_path,
)

PARTITIONS = 3


@pytest.fixture
async def factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[PulsarQueueFactory]:
    async with pulsar_queue(request.node.name, tmp_path, PARTITIONS) as opened:
        yield opened


def _token_signed_with_another_key(subject: str) -> str:
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256"}).encode())
    body = part(json.dumps({"sub": subject}).encode())
    signature = hmac.new(secrets.token_bytes(32), f"{head}.{body}".encode(), hashlib.sha256)
    return f"{head}.{body}.{part(signature.digest())}"


async def _assert_refused(factory: PulsarQueueFactory, token: str | None) -> None:
    keeper = factory.open()
    await keeper.start()  # the topic and the subscription exist, so a message would show
    intruder = factory.with_token(token)
    try:
        with pytest.raises(QueueUnavailable) as on_start:
            await intruder.start()
        assert "refused" in str(on_start.value)
        # Straight to the binary protocol, past the admin API.
        with pytest.raises(QueueUnavailable) as on_publish:
            await intruder.publish([QueueMessage("intruder", b"must not be kept")])
        for refusal in (on_start.value, on_publish.value):
            assert factory.token not in str(refusal)
            assert not token or token not in str(refusal)
        assert (await keeper.status()).backlog == 0
        # The same check sees a message that does get in.
        await keeper.publish([QueueMessage("keeper", b"kept")])
        assert await _backlog_once_settled(keeper, 1) == 1
    finally:
        await intruder.close()
        await keeper.close()


async def _backlog_once_settled(queue: PulsarIngestQueue, expected: int) -> int:
    """Broker statistics may trail a publish: ask until they agree (or a generous bound)."""
    for _ in range(60):
        backlog = (await queue.status()).backlog
        if backlog == expected:
            break
        await asyncio.sleep(0.25)
    return backlog


async def test_a_client_without_a_token_is_refused(factory: PulsarQueueFactory) -> None:
    await _assert_refused(factory, None)


async def test_a_client_with_a_token_signed_by_another_key_is_refused(
    factory: PulsarQueueFactory,
) -> None:
    await _assert_refused(factory, _token_signed_with_another_key("tessera-admin"))


async def test_the_token_never_shows_in_the_queue_repr(factory: PulsarQueueFactory) -> None:
    queue = factory.open()
    assert factory.token not in repr(queue)
    await queue.close()


async def test_install_sets_the_namespace_so_nothing_unprocessed_is_dropped(
    factory: PulsarQueueFactory,
) -> None:
    queue = factory.open(max_backlog_mb=30)
    await queue.start()
    namespace = f"/admin/v2/namespaces/{factory.namespace}"
    try:
        lines = await queue.apply_retention(QueueRetention(hours=2, megabytes=64))
        assert lines[0] == (
            f"pulsar namespace {factory.namespace}: acknowledged messages kept 2 h / 64 MB; "
            "no message TTL, no subscription expiration"
        )
        async with admin_client(factory.token) as admin:
            policies = (await admin.get(namespace)).json()
        assert policies["retention_policies"] == {
            "retentionTimeInMinutes": 120,
            "retentionSizeInMB": 64,
        }
        # 30 MB over 3 partitions; a full partition refuses the producer, evicts nothing.
        quota = policies["backlog_quota_map"]["destination_storage"]
        assert quota["limitSize"] == 10 * 1024 * 1024
        assert quota["policy"] == "producer_exception"
        assert policies["message_ttl_in_seconds"] == 0
        assert policies["subscription_expiration_time_minutes"] == 0
        assert await queue.retention_risks() == []
        # A retention at or below a partition's quota is raised above it (Pulsar insists).
        lines = await queue.apply_retention(QueueRetention(hours=2, megabytes=5))
        assert await queue.read_retention() == QueueRetention(hours=2, megabytes=11)
        assert "raised from 5 to 11 MB" in lines[-1]
    finally:
        await queue.close()


async def test_a_ttl_or_an_evicting_quota_is_a_risk(factory: PulsarQueueFactory) -> None:
    queue = factory.open()
    await queue.start()
    namespace = f"/admin/v2/namespaces/{factory.namespace}"
    try:
        await queue.apply_retention(QueueRetention(hours=2, megabytes=2048))
        async with admin_client(factory.token) as admin:
            # As an operator might: a TTL and an evicting quota on the namespace.
            assert (await admin.post(f"{namespace}/messageTTL", json=60)).status_code == 204
            evict = {"limitSize": 1 << 20, "limitTime": -1, "policy": "consumer_backlog_eviction"}
            answer = await admin.post(
                f"{namespace}/backlogQuota",
                params={"backlogQuotaType": "destination_storage"},
                json=evict,
            )
            assert answer.status_code == 204, answer.text
        risks = await risks_settled(queue, 2)
        assert any("message TTL of 60 s" in risk for risk in risks), risks
        assert any("consumer_backlog_eviction" in risk for risk in risks), risks
        # Install puts it right again.
        await queue.apply_retention(QueueRetention(hours=2, megabytes=2048))
        assert await risks_settled(queue, 0) == []
    finally:
        await queue.close()


async def test_nothing_is_applied_to_public_default(factory: PulsarQueueFactory) -> None:
    shared = PulsarIngestQueue(
        PULSAR_URL,
        admin_url=PULSAR_ADMIN_URL,
        token=factory.token,
        namespace="public/default",
        topic=factory.topic,
        partitions=PARTITIONS,
    )
    try:
        with pytest.raises(ConfigurationError, match="PULSAR_NAMESPACE=public/default is shared"):
            await shared.apply_retention(QueueRetention(hours=1, megabytes=10))
        risks = await shared.retention_risks()
        assert any("shared namespace public/default" in risk for risk in risks), risks
        # Refused before any call: not even the namespace's policies were read.
        async with admin_client(factory.token) as admin:
            topic = f"{topic_path(factory.topic, 'public/default')}/partitions"
            assert (await admin.get(topic)).status_code == 404
    finally:
        await shared.close()


async def test_start_creates_a_missing_namespace(factory: PulsarQueueFactory) -> None:
    """A first start before `tessera install` finds no namespace yet: it makes one."""
    async with admin_client(factory.token) as admin:
        assert (await admin.delete(f"/admin/v2/namespaces/{factory.namespace}")).status_code == 204
    queue = factory.open()
    try:
        await queue.start()
        await queue.publish([QueueMessage("k", b"kept")])
        assert await _backlog_once_settled(queue, 1) == 1
    finally:
        await queue.close()


async def test_start_makes_the_partitioned_topic_and_the_subscription(
    factory: PulsarQueueFactory,
) -> None:
    queue: PulsarIngestQueue = factory.open()
    await queue.start()
    await queue.start()  # a second start (another process) finds both there
    try:
        async with admin_client(factory.token) as admin:
            metadata = (
                await admin.get(f"{topic_path(factory.topic, factory.namespace)}/partitions")
            ).json()
            subscriptions = (
                await admin.get(f"{topic_path(factory.topic, factory.namespace)}/subscriptions")
            ).json()
        assert metadata["partitions"] == PARTITIONS
        assert subscriptions == [f"{factory.topic}-workers"]
        status = await queue.status()
        assert [p.partition for p in status.partitions] == list(range(PARTITIONS))
    finally:
        await queue.close()
        await queue.close()  # closing twice is harmless
