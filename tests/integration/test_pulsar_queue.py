"""The Pulsar queue against the real standalone broker (``bash scripts/pulsar up``), beyond the
contract suite: token authentication, the namespace retention and the topic's partitions."""

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

from tessera.storage.pulsar import PulsarIngestQueue
from tessera.storage.queue_ports import QueueMessage, QueueRetention, QueueUnavailable
from tests.support.queues_pulsar import (
    NAMESPACE,
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


async def test_retention_reads_back_from_the_namespace(factory: PulsarQueueFactory) -> None:
    queue = factory.open()
    await queue.start()
    path = f"/admin/v2/namespaces/{NAMESPACE}/retention"
    try:
        lines = await queue.apply_retention(QueueRetention(hours=2, megabytes=64))
        assert lines == [
            f"pulsar namespace {NAMESPACE}: retention 2 h / 64 MB (kept after acknowledgement)"
        ]
        async with admin_client(factory.token) as admin:
            applied = (await admin.get(path)).json()
        assert applied == {"retentionTimeInMinutes": 120, "retentionSizeInMB": 64}
    finally:
        # Back to the project's defaults (TESSERA_QUEUE_RETENTION_HOURS / _MB).
        await queue.apply_retention(QueueRetention(hours=720, megabytes=1024))
        await queue.close()


async def test_start_makes_the_partitioned_topic_and_the_subscription(
    factory: PulsarQueueFactory,
) -> None:
    queue: PulsarIngestQueue = factory.open()
    await queue.start()
    await queue.start()  # a second start (another process) finds both there
    try:
        async with admin_client(factory.token) as admin:
            metadata = (await admin.get(f"{topic_path(factory.topic)}/partitions")).json()
            subscriptions = (await admin.get(f"{topic_path(factory.topic)}/subscriptions")).json()
        assert metadata["partitions"] == PARTITIONS
        assert subscriptions == [f"{factory.topic}-workers"]
        status = await queue.status()
        assert [p.partition for p in status.partitions] == list(range(PARTITIONS))
    finally:
        await queue.close()
        await queue.close()  # closing twice is harmless
