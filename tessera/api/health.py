"""GET /health: 200 once the server can take traffic, 503 before and while stopping."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tessera.api.deps import RuntimeDep

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    if not runtime.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ok"})
