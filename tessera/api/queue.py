"""The ingest queue over HTTP.

- ``GET /queue/status``: mode, backlog and lag per partition, dead letters, live workers and
  their throughput
- ``GET /queue/dead-letters``: newest first, with total; ``GET /queue/dead-letters/{id}`` adds
  the message body (base64)
- ``POST /queue/dead-letters/{id}/replay``, ``POST /queue/dead-letters/replay`` (all of them)
- ``DELETE /queue/dead-letters/{id}``
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.api.paging import ListOffset
from tessera.model.common import DEFAULT_TENANT
from tessera.workers.status import queue_status

router = APIRouter(tags=["queue"], dependencies=[Depends(current_user)])

LetterId = Annotated[str, Path(max_length=64)]


@router.get("/queue/status")
async def get_queue_status(runtime: RuntimeDep) -> Response:
    status = await queue_status(
        mode=runtime.settings.ingest_mode,
        queue=runtime.queue,
        dead_letters=runtime.storage.dead_letters,
        beats=runtime.storage.worker_beats,
        tenant=DEFAULT_TENANT,
    )
    return json_response(status)


@router.get("/queue/dead-letters")
async def list_queue_dead_letters(
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: ListOffset = 0,
) -> Response:
    letters, total = await runtime.dead_letters.list(DEFAULT_TENANT, limit=limit, offset=offset)
    return json_response({"total": total, "result": letters})


@router.post("/queue/dead-letters/replay")
async def replay_all_queue_dead_letters(
    runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
) -> Response:
    replayed = await runtime.dead_letters.replay_all(DEFAULT_TENANT, limit=limit)
    return json_response({"replayed": len(replayed), "result": replayed})


@router.get("/queue/dead-letters/{letter_id}")
async def get_queue_dead_letter(letter_id: LetterId, runtime: RuntimeDep) -> Response:
    return json_response(await runtime.dead_letters.get(DEFAULT_TENANT, letter_id))


@router.post("/queue/dead-letters/{letter_id}/replay")
async def replay_queue_dead_letter(letter_id: LetterId, runtime: RuntimeDep) -> Response:
    return json_response(await runtime.dead_letters.replay(DEFAULT_TENANT, letter_id))


@router.delete("/queue/dead-letters/{letter_id}", status_code=204)
async def drop_queue_dead_letter(letter_id: LetterId, runtime: RuntimeDep) -> Response:
    await runtime.dead_letters.drop(DEFAULT_TENANT, letter_id)
    return Response(status_code=204)
