"""Throttling the profiles one client address starts (``TESSERA_THROTTLE_NEW_PROFILES_PER_MINUTE``).

Every request without a known profile or session starts a profile, which is stored for good:
a script that sends such requests fills storage (and the caches) as fast as it can send. This
wraps the intake (``Ingestor.ingest`` in sync mode, the queue's intake in async mode, so the
answer is the client's in both) and charges the client's address one token per request that
would start a profile; when its bucket is empty the request is answered 429 with
``Retry-After`` before anything is stored. Requests of known visitors are never charged.

Whether a request starts a profile is decided as the ingest path will: a profile id it names
that exists, or a session it names that belongs to a profile, means no. The two reads go
through the same caches the ingest path reads next, so they cost little.
"""

from __future__ import annotations

from tessera.pipeline.request import IncomingBatch, IngestResult, Intake
from tessera.pipeline.visitor import VisitorDirectory
from tessera.security.throttle import Throttle


class NewProfileThrottle:
    def __init__(self, intake: Intake, throttle: Throttle, visitors: VisitorDirectory) -> None:
        self._intake = intake
        self._throttle = throttle
        self._visitors = visitors

    async def __call__(self, batch: IncomingBatch) -> IngestResult:
        if self._throttle.per_minute > 0 and await self._starts_a_profile(batch):
            await self._throttle.take(batch.client_ip or "unknown", "new visitors")
        return await self._intake(batch)

    async def _starts_a_profile(self, batch: IncomingBatch) -> bool:
        if batch.profile_less:
            return False
        if batch.profile_id is not None:
            return await self._visitors.profile(batch.tenant, batch.profile_id) is None
        if batch.session_id is not None:
            session = await self._visitors.session(batch.tenant, batch.session_id)
            return session is None or session.profile is None
        return True
