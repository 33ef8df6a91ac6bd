"""Async intake: what ``/track`` and ``/collect`` do when TESSERA_INGEST_MODE=async.

The request was parsed and its source checked already. Here every id the answer names is
stamped into the batch (event ids, the session id, the profile id), so the worker that runs
the pipeline later uses exactly those, and a redelivered message or a client's retry of the
same events meets ids that are already stored. The answer goes out only once the queue
acknowledged the message; when it cannot, QueueUnavailable becomes a 503 with Retry-After,
never a 200 for an event the queue did not keep.

The intake needs nothing but the queue: it reads no session, no profile, no cache, so an outage
of the record store or of Redis does not stop collection while the queue is healthy.

Which profile id the answer names (identity/profile_ids.py for the ids Tessera issues):

- the request names one a worker will use: that id. A server source's id is always used (the
  worker creates the profile when it is new); a public source's only when Tessera issued it
  (it proves so itself), since a public client may not make up the id of a new profile;
  (An erased profile's id is never taken again, so such an answer names an id that stays gone;
  the request's events then go to the session's promised id.)
- otherwise the id *promised to the session*: issued by Tessera, the same for every request of
  that session, so a new visitor's second request, arriving before a worker stored the first,
  is answered the same id as the first. The worker honours it: a new session's profile is
  created under it; when the session turns out to belong to a profile already (or the request
  named an existing profile Tessera did not issue, from before ids were issued this way), the
  promised id is added to that profile's ids, so the id answered always finds the profile that
  got the events.
"""

from __future__ import annotations

from tessera.identity.profile_ids import ProfileIds
from tessera.model.common import new_id, utcnow
from tessera.pipeline.request import IncomingBatch, IngestResult
from tessera.queue.ports import IngestQueue, QueueMessage
from tessera.workers.codec import encode_batch


class QueueIntake:
    def __init__(self, queue: IngestQueue, ids: ProfileIds) -> None:
        self._queue = queue
        self._ids = ids

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
        public = not batch.source.trusted
        if profile_id is None or public:
            # The session's promised id: what a public request falls back to when the id it
            # names cannot be used (made up, or an erased profile's), and the answer when it
            # names none or one Tessera did not issue.
            batch.new_profile_id = self._ids.for_session(batch.tenant, batch.session_id)
        if self._ids.answers_promise(profile_id, public):
            profile_id = batch.new_profile_id
        # Keyed by session: one session's requests are processed in the order they came,
        # whether or not each names the profile, so a later one never overtakes the request
        # that tied the session to its profile (and the visitor is never split).
        await self._queue.publish([QueueMessage(batch.session_id, encode_batch(batch))])
        return IngestResult(profile_id, batch.session_id, event_ids)
