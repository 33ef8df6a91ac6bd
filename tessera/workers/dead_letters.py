"""Dead letters for operators: what failed and why, and sending it through again.

Replaying publishes the message again, with its original key and body (so its event ids, and
with them the idempotency, are the ones it had), then drops the dead letter. In sync mode there
is no queue: the pipeline runs on it at once, and a failure keeps the dead letter.
"""

from __future__ import annotations

import base64
import builtins
from dataclasses import dataclass
from typing import Any

from tessera.errors import NotFound
from tessera.pipeline.ingest import Ingestor
from tessera.queue.ports import IngestQueue, QueueMessage
from tessera.storage.worker_ports import DeadLetter, DeadLetterStore
from tessera.workers.codec import UnreadableMessage, decode_batch


@dataclass
class DeadLetterDesk:
    store: DeadLetterStore
    ingestor: Ingestor
    queue: IngestQueue | None = None

    async def list(
        self, tenant: str, *, limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        letters, total = await self.store.list(tenant, limit=limit, offset=offset)
        return [letter_view(letter) for letter in letters], total

    async def get(self, tenant: str, letter_id: str) -> dict[str, Any]:
        return letter_view(await self._letter(tenant, letter_id), with_body=True)

    async def replay(self, tenant: str, letter_id: str) -> dict[str, Any]:
        """Send it through again; answers what happened."""
        letter = await self._letter(tenant, letter_id)
        if self.queue is not None:
            await self.queue.publish([QueueMessage(letter.key, letter.body)])
            outcome = "published"
        else:
            result = await self.ingestor.ingest(decode_batch(letter.body))
            outcome = f"processed ({len(result.event_ids)} event(s))"
        await self.store.delete(tenant, letter_id)
        return {"id": letter_id, "replayed": outcome}

    async def replay_all(self, tenant: str, *, limit: int = 1000) -> builtins.list[dict[str, Any]]:
        """Oldest problems are not special: replays the newest ``limit`` letters."""
        letters, _total = await self.store.list(tenant, limit=limit)
        return [await self.replay(tenant, letter.id) for letter in letters]

    async def drop(self, tenant: str, letter_id: str) -> None:
        if not await self.store.delete(tenant, letter_id):
            raise NotFound(f"dead letter {letter_id!r} not found")

    async def _letter(self, tenant: str, letter_id: str) -> DeadLetter:
        letter = await self.store.get(tenant, letter_id)
        if letter is None:
            raise NotFound(f"dead letter {letter_id!r} not found")
        return letter


def letter_view(letter: DeadLetter, *, with_body: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": letter.id,
        "topic": letter.topic,
        "partition": letter.partition,
        "key": letter.key,
        "position": letter.position,
        "error": letter.error,
        "attempts": letter.attempts,
        "created": letter.created.isoformat(),
        "bytes": len(letter.body),
    }
    try:
        batch = decode_batch(letter.body)
    except UnreadableMessage:
        view["events"] = None
    else:
        view["source"] = batch.source.id
        view["events"] = [{"id": event.id, "type": event.type} for event in batch.events]
    if with_body:
        view["body_base64"] = base64.b64encode(letter.body).decode()
    return view
