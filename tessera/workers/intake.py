"""Async intake: what ``/track`` and ``/collect`` do when TESSERA_INGEST_MODE=async.

The request was parsed and its source checked already. Here every id the answer names is
stamped into the batch (event ids, the session id, the profile id of a new visitor), so the
worker that runs the pipeline later uses exactly those, and a redelivered message or a client's
retry of the same events meets ids that are already stored. The answer goes out only once the
queue acknowledged the message; when it cannot, QueueUnavailable becomes a 503 with
Retry-After, never a 200 for an event the queue did not keep.
"""

from __future__ import annotations

from tessera.model.common import new_id, utcnow
from tessera.pipeline.request import IncomingBatch, IngestResult
from tessera.pipeline.visitor import VisitorDirectory
from tessera.storage.queue_ports import IngestQueue, QueueMessage
from tessera.workers.codec import encode_batch


class QueueIntake:
    def __init__(self, queue: IngestQueue, visitors: VisitorDirectory) -> None:
        self._queue = queue
        self._visitors = visitors

    async def __call__(self, batch: IncomingBatch) -> IngestResult:
        now = utcnow()
        for event in batch.events:
            event.id = event.id or new_id()
            # The event happened when the API got it, not when a worker reached it.
            event.time = event.time or now
        event_ids = [event.id for event in batch.events if event.id is not None]
        if batch.profile_less:
            # No profile to keep in order: spread the webhook's batches over the partitions.
            key = event_ids[0] if event_ids else new_id()
            await self._queue.publish([QueueMessage(key, encode_batch(batch))])
            return IngestResult(None, None, event_ids)
        batch.session_id = batch.session_id or new_id()
        profile_id = batch.profile_id or await self._session_profile(batch)
        if profile_id is None:
            profile_id = batch.new_profile_id = new_id()
        # The keying: by profile when the request names one, else by its session.
        key = batch.profile_id or batch.session_id
        await self._queue.publish([QueueMessage(key, encode_batch(batch))])
        return IngestResult(profile_id, batch.session_id, event_ids)

    async def _session_profile(self, batch: IncomingBatch) -> str | None:
        """The profile a known session belongs to: the one the pipeline will use."""
        assert batch.session_id is not None
        session = await self._visitors.session(batch.tenant, batch.session_id)
        if session is None or session.profile is None:
            return None
        return session.profile.id
