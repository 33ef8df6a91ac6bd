"""Periodic clean-up of what expires: access tokens and the workflows' memory.

Expired rows are never answered anyway (reads compare expiry times); removing them keeps the
tables small. Runs once at start and then every ``interval_s``.
"""

from __future__ import annotations

import asyncio
import logging

from tessera.core.background import BackgroundLoop
from tessera.model.common import utcnow
from tessera.storage.automation_ports import KeyValueStore
from tessera.storage.ports import TokenStore

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(self, tokens: TokenStore, memory: KeyValueStore, *, interval_s: float) -> None:
        self._tokens = tokens
        self._memory = memory
        self._interval_s = interval_s
        self._background = BackgroundLoop("tessera-housekeeping", self._loop)

    def start(self) -> None:
        self._background.start()

    async def stop(self) -> None:
        await self._background.stop()

    async def run_once(self) -> tuple[int, int]:
        """(expired tokens removed, expired memory keys removed)."""
        now = utcnow()
        return await self._tokens.purge_expired(now), await self._memory.purge_expired(now)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.run_once()
            # A failed clean-up is retried at the next tick; it must not end the loop.
            except Exception:
                log.exception("housekeeping failed; retrying later")
