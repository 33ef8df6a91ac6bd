"""Building the whole ASGI application: collection in front, the management API behind it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tessera import __version__
from tessera.api import (
    auth,
    consents,
    destinations,
    health,
    install,
    processing,
    profile_admin,
    queue,
    records,
    rules,
    search,
    segments,
    sources,
    workflows,
)
from tessera.api.body_limit import BodySizeLimit
from tessera.api.forwarded import ForwardedClient
from tessera.api.problems import encodable, refused_request
from tessera.api.slow_clients import BodyDeadline
from tessera.collect.history_intake import HistoryIntake
from tessera.collect.routes import CollectionApp
from tessera.errors import StorageUnavailable, TesseraError, Unauthorized
from tessera.ops.gc_tuning import tune_for_serving
from tessera.pipeline.history import HistoryImporter
from tessera.runtime import Runtime, build_runtime
from tessera.settings import Settings
from tessera.storage.outages import is_outage, outage_error_types

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    runtime: Runtime | None = None,
    on_ready: Callable[[Runtime], None] | None = None,
) -> Any:
    runtime = runtime or build_runtime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        tune_for_serving()
        if on_ready is not None:
            on_ready(runtime)
        try:
            yield
        finally:
            await runtime.stop()

    api = FastAPI(
        title="Tessera",
        version=__version__,
        description="Customer Data Platform: collection, profiles, sessions and events.",
        lifespan=lifespan,
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
        openapi_url="/openapi.json" if settings.api_docs else None,
    )
    api.state.runtime = runtime
    add_error_handlers(api)
    for module in (
        health,
        install,
        auth,
        sources,
        records,
        profile_admin,
        consents,
        search,
        processing,
        segments,
        destinations,
        rules,
        workflows,
        queue,
    ):
        api.include_router(module.router)
    history = HistoryIntake(
        settings=settings,
        sources=runtime.sources,
        importer=HistoryImporter(
            runtime.ingestor.ingest,
            close_visit_after=timedelta(seconds=settings.close_visit_after),
        ),
    )
    collection = CollectionApp(
        settings=settings,
        sources=runtime.sources,
        intake=runtime.intake,
        history=history,
        fallback=BodySizeLimit(api, limit=settings.max_body_bytes),
        is_outage=is_outage,
    )
    return ForwardedClient(
        BodyDeadline(collection, timeout_s=settings.body_timeout_seconds),
        trusted=settings.trusted_proxy_networks,
    )


def add_error_handlers(api: FastAPI) -> None:
    """Tessera's errors answer with their status; a storage client's outage that got past its
    store still answers 503 with Retry-After (see ``_outage_or_bug``). Called once the
    runtime's storage is built, so that the error types of its clients are loaded."""
    api.add_exception_handler(TesseraError, _tessera_error)
    api.add_exception_handler(RequestValidationError, refused_request)
    for error_type in outage_error_types():
        api.add_exception_handler(error_type, _outage_or_bug)


async def _tessera_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, TesseraError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
    if error.retry_after is not None:  # 503 (storage), 429 (a throttle)
        headers = {"Retry-After": str(error.retry_after)}
    # A message may quote a value of the request (an id from the path), which may hold a lone
    # surrogate no UTF-8 can encode.
    detail = encodable(error.message)
    return JSONResponse({"detail": detail}, status_code=error.status_code, headers=headers)


async def _outage_or_bug(request: Request, error: Exception) -> JSONResponse:
    """The last-resort boundary of the management API for the errors of storage clients that
    got past a store: an outage is still a 503 with Retry-After (logged with its traceback, to
    find the store that let it through); anything else is raised on, to the framework's 500."""
    if not is_outage(error):
        raise error
    log.warning("%s: storage outage not reported by its store", request.url.path, exc_info=error)
    unavailable = StorageUnavailable(f"storage unavailable ({type(error).__name__}); retry")
    return await _tessera_error(request, unavailable)
