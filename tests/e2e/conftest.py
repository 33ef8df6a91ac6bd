"""Fixtures of the async-mode tests: each queue backend's topic, and a Redis key prefix for
the processes' locks and caches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.queues import QUEUE_BACKENDS, QueueFactory
from tests.support.redis_service import reachable_client, unique_prefix

PARTITIONS = 8


@pytest.fixture(params=list(QUEUE_BACKENDS))
def queue_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueFactory]:
    """The backend's opener, run on its own loop (it is async, the test is not)."""
    loop = asyncio.new_event_loop()
    opener = QUEUE_BACKENDS[request.param](request.node.name, tmp_path / "data", PARTITIONS)
    factory = loop.run_until_complete(opener.__aenter__())
    try:
        yield factory
    finally:
        loop.run_until_complete(opener.__aexit__(None, None, None))
        loop.close()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis key prefix for the processes' locks and caches, emptied afterwards."""
    prefix = unique_prefix(request.node.name)

    async def check() -> None:
        client = await reachable_client()
        await client.aclose()

    asyncio.run(check())
    yield prefix

    async def clean() -> None:
        client = await reachable_client()
        try:
            async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()

    asyncio.run(clean())
