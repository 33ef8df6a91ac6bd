"""Throttling the profiles one client address starts (``TESSERA_THROTTLE_NEW_PROFILES_PER_MINUTE``).

Every public request that names no profile Tessera issued starts one, stored for good: a script
that sends such requests fills storage (and the caches) as fast as it can send. This wraps the
intake (``Ingestor.ingest`` in sync mode, the queue's intake in async mode, so the answer is the
client's in both) and charges the client's address one token per such request; when its bucket
is empty the request is answered 429 with ``Retry-After`` before anything is stored.

Whether a request starts a profile is told without reading anything (async intake needs nothing
but the queue): a returning visitor's tracker sends the id Tessera issued it, which proves itself
(identity/profile_ids.py); a request without one is charged. Server sources are never charged
(they prove who they are), and neither are private addresses while no trusted proxy is set:
behind a reverse proxy every visitor would share its address and be refused together (set
TESSERA_TRUSTED_PROXIES to throttle the clients behind it; a warning says so once).
"""

from __future__ import annotations

import ipaddress
import logging

from tessera.core.throttle import Throttle
from tessera.identity.profile_ids import ProfileIds
from tessera.pipeline.request import IncomingBatch, IngestResult, Intake

log = logging.getLogger(__name__)


class NewProfileThrottle:
    def __init__(
        self, intake: Intake, throttle: Throttle, ids: ProfileIds, *, behind_proxies: bool
    ) -> None:
        """``behind_proxies``: TESSERA_TRUSTED_PROXIES is set, so the address is the client's."""
        self._intake = intake
        self._throttle = throttle
        self._ids = ids
        self._behind_proxies = behind_proxies
        self._warned = False

    async def __call__(self, batch: IncomingBatch) -> IngestResult:
        if self._throttle.per_minute > 0 and self._charged(batch):
            await self._throttle.take(batch.client_ip or "unknown", "new visitors")
        return await self._intake(batch)

    def _charged(self, batch: IncomingBatch) -> bool:
        if batch.profile_less or batch.source.trusted:
            return False
        if batch.profile_id is not None and self._ids.minted(batch.profile_id):
            return False
        return not self._shared_address(batch.client_ip)

    def _shared_address(self, address: str | None) -> bool:
        """A private address with no trusted proxy set: likely a proxy's, shared by all."""
        if self._behind_proxies or address is None:
            return False
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        shared = parsed.is_private and not parsed.is_loopback
        if shared and not self._warned:
            self._warned = True
            log.warning(
                "requests come from the private address %s and TESSERA_TRUSTED_PROXIES is not "
                "set: new-visitor throttling is off for private addresses (behind a proxy, every "
                "visitor would share its address); set TESSERA_TRUSTED_PROXIES to throttle the "
                "clients behind it",
                address,
            )
        return shared
