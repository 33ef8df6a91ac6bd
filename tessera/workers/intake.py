"""Async intake: what ``/track`` and ``/collect`` do when TESSERA_INGEST_MODE=async.

The request was parsed and its source checked already. Here every id the answer names is
stamped into the batch (event ids, the session id, the profile id), so the worker that runs
the pipeline later uses exactly those, and a redelivered message or a client's retry of the
same events meets ids that are already stored. The answer goes out only once the queue
acknowledged the message; when it cannot, QueueUnavailable becomes a 503 with Retry-After,
never a 200 for an event the queue did not keep.

The intake needs nothing but the queue: it reads no session, no profile, no cache, so an outage
of the record store or of Redis does not stop collection while the queue is healthy.

Which profile id the answer names:

- the request names one: that id (the worker creates it when it does not exist yet);
- it does not: the id *derived from the session* (a keyed hash of tenant and session id). Every
  answer for one session names the same id, so a new visitor's second request, arriving before a
  worker stored the first, is answered the same id as the first. The worker honours it: a new
  session's profile is created under it, and when the session turns out to belong to another
  profile already (it was first seen with a profile id the client chose), the derived id is
  added to that profile's ids, so the id answered always finds the profile that got the events.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from tessera.model.common import new_id, utcnow, uuid_text
from tessera.pipeline.request import IncomingBatch, IngestResult
from tessera.storage.queue_ports import IngestQueue, QueueMessage
from tessera.workers.codec import encode_batch


def session_profile_id(secret: str, tenant: str, session_id: str) -> str:
    """The profile id promised to a session's requests that name none: a UUID (version 8,
    RFC 9562) from a keyed hash, so nobody can work it out from a session id without the
    installation's secret."""
    key = f"profile\x00{tenant}\x00{session_id}".encode()
    return uuid_text(hmac.new(secret.encode(), key, hashlib.sha256).digest(), version=8)


class QueueIntake:
    def __init__(self, queue: IngestQueue, secret: Callable[[], str]) -> None:
        """``secret``: the installation's key for derived profile ids (read at each call, as
        it is loaded from the configuration store at start-up)."""
        self._queue = queue
        self._secret = secret

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
        profile_id = batch.profile_id
        if profile_id is None:
            profile_id = session_profile_id(self._secret(), batch.tenant, batch.session_id)
            batch.new_profile_id = profile_id
        # Keyed by session: one session's requests are processed in the order they came,
        # whether or not each names the profile, so a later one never overtakes the request
        # that tied the session to its profile (and the visitor is never split).
        await self._queue.publish([QueueMessage(batch.session_id, encode_batch(batch))])
        return IngestResult(profile_id, batch.session_id, event_ids)
