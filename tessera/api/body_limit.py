"""A size limit on management API bodies, enforced before FastAPI reads them.

FastAPI would read a body of any size into memory, and report a failure while reading it as a
generic 400. This layer reads the body first, up to the limit, answers 413 past it, and hands
FastAPI the body it already read.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Receive, Scope, Send

from tessera.collect.http import read_body, send_json
from tessera.errors import TesseraError


class BodySizeLimit:
    def __init__(self, app: Any, *, limit: int) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self._app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self._limit)
        except TesseraError as error:
            await send_json(send, error.status_code, {"detail": error.message}, [])
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as ASGI says

        await self._app(scope, replay, send)
