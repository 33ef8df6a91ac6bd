"""The background task that keeps a lease-based queue consumer's partitions (embedded log,
Redis Streams) while the consumer lives, also while its worker is busy with a long batch."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class Renewing(Protocol):
    @property
    def closed(self) -> bool: ...

    async def keep_alive(self) -> None:
        """Beat and renew the leases; raises one of the ``failures`` given to the task."""
        ...


def start_renewal(
    consumer: Renewing, every: float, failures: tuple[type[BaseException], ...]
) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(
        _renew(weakref.ref(consumer), every, failures), name="tessera-queue-lease-renewal"
    )


async def _renew(
    consumer_ref: weakref.ref[Renewing], every: float, failures: tuple[type[BaseException], ...]
) -> None:
    """Only a weak reference is held between rounds, so a consumer dropped without ``close``
    (as in a crash) stops renewing and its partitions go to others when the lease runs out."""
    caught: tuple[type[BaseException], ...] = (*failures, TimeoutError)
    while True:
        await asyncio.sleep(every)
        consumer = consumer_ref()
        if consumer is None or consumer.closed:
            return
        try:
            async with asyncio.timeout(every):
                await consumer.keep_alive()
        except caught as exc:
            # The next round tries again; the lease outlasts a few missed renewals.
            log.warning("could not renew the queue leases: %s", type(exc).__name__)
        del consumer
