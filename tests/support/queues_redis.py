"""The Redis Streams queue for the IngestQueue contract suite and the Redis queue tests.

Every test gets its own key prefix; each ``open()`` builds its own client, as a second process
would, and every key under the prefix is deleted when the test ends.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis

from tessera.queue.redis.queue import RedisIngestQueue
from tessera.storage.redis.client import KeySpace
from tests.support.redis_service import (
    REDIS_HOST,
    REDIS_PORT,
    delete_space,
    new_client,
    reachable_client,
    unique_prefix,
)

TOPIC = "tessera-ingest"
LEASE_SECONDS = 5.0


def free_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago, and stays so in practice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisQueueFactory:
    backend = "redis"

    def __init__(self, keys: KeySpace, partitions: int, *, lease_seconds: float) -> None:
        self.keys = keys
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self._clients: list[Redis] = []

    def open(self, *, max_backlog_mb: int = 1024) -> RedisIngestQueue:
        client = new_client()
        self._clients.append(client)
        return RedisIngestQueue(
            client,
            self.keys,
            topic=TOPIC,
            partitions=self.partitions,
            lease_seconds=self.lease_seconds,
            max_backlog_mb=max_backlog_mb,
        )

    def unreachable(self) -> RedisIngestQueue:
        client = Redis(
            host="127.0.0.1",
            port=free_port(),
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            decode_responses=False,
        )
        self._clients.append(client)
        return RedisIngestQueue(
            client, self.keys, topic=TOPIC, partitions=self.partitions, publish_timeout=2.0
        )

    def environment(self) -> dict[str, str]:
        return {
            "TESSERA_QUEUE": "redis",
            "REDIS_HOST": REDIS_HOST,
            "REDIS_PORT": str(REDIS_PORT),
            "TESSERA_REDIS_PREFIX": self.keys.prefix,
            "TESSERA_QUEUE_TOPIC": TOPIC,
            "TESSERA_QUEUE_PARTITIONS": str(self.partitions),
            "TESSERA_QUEUE_LEASE_SECONDS": str(self.lease_seconds),
        }

    async def close_clients(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()


@asynccontextmanager
async def redis_queue(
    name: str, folder: Path, partitions: int, *, lease_seconds: float = LEASE_SECONDS
) -> AsyncIterator[RedisQueueFactory]:
    """Skips (loudly) when Redis is not running; the folder is not needed."""
    del folder
    janitor = await reachable_client()
    keys = KeySpace(unique_prefix(name))
    factory = RedisQueueFactory(keys, partitions, lease_seconds=lease_seconds)
    try:
        yield factory
    finally:
        await factory.close_clients()
        await delete_space(janitor, keys)
        await janitor.aclose()
