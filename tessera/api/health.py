"""GET /health: 200 once the server can take traffic, 503 before and while stopping. The
answer names the process that gave it: with several API processes (`tessera serve --workers`)
that shows which one a client reached (a process id tells an outsider nothing it could use)."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tessera.api.deps import RuntimeDep

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    if not runtime.ready:
        return JSONResponse({"status": "starting", "process": os.getpid()}, status_code=503)
    return JSONResponse({"status": "ok", "process": os.getpid()})
