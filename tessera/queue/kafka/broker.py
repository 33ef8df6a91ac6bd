"""Bounding and translating broker round trips: every way aiokafka can fail (its own long
retries included) ends as QueueUnavailable within the caller's time limit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.errors import KafkaError, for_code  # type: ignore[import-untyped]

from tessera.queue.ports import QueueUnavailable

log = logging.getLogger(__name__)


@asynccontextmanager
async def broker_call(servers: str, what: str, seconds: float) -> AsyncIterator[None]:
    """Bounds a broker round trip and turns every way it can fail into QueueUnavailable:
    aiokafka retries bootstrap and metadata for its own (long) request timeout otherwise."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise QueueUnavailable(f"kafka at {servers}: {what} timed out after {seconds:g} s") from exc
    except (KafkaError, OSError) as exc:
        raise QueueUnavailable(f"kafka at {servers}: {what} failed ({exc!r})") from exc


def raise_for_codes(codes: Iterable[int], what: str) -> None:
    for code in codes:
        if code:
            raise for_code(code)(what)


async def stop_quietly(stopping: Any, what: str, seconds: float) -> None:
    """Closing must not fail the caller's own shutdown; a broker gone away is only logged."""
    try:
        async with asyncio.timeout(seconds):
            await stopping
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("kafka: closing the %s failed: %r", what, exc)
