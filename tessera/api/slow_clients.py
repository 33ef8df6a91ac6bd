"""A deadline for the body of every request (docs/security.md, "Bounds").

A client that trickles a body holds a request for as long as it likes, and uvicorn has no limit
on how long a body may take, so ``BodyDeadline`` is an ASGI layer in front of everything: once
the headers are in, the whole body must arrive within ``TESSERA_BODY_TIMEOUT_SECONDS``. A read
past it raises ``RequestTimeout`` in whatever reads the body (collection's ``read_body``, the
API's size limit), which answers 408; the answer closes the connection. The headers' deadline
is the server's (``serving/header_deadline.py``), since it lives in uvicorn's protocol.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from tessera.errors import RequestTimeout


class BodyDeadline:
    """Every body read of a request ends within ``timeout_s`` of its start (408 past it)."""

    def __init__(self, app: Any, *, timeout_s: float) -> None:
        self._app = app
        self._timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        deadline = time.monotonic() + self._timeout_s
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # after the body: waiting for a disconnect is not the client's doing
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body did not arrive within {self._timeout_s:g} s "
                    "(TESSERA_BODY_TIMEOUT_SECONDS)"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 408:
                # What is left of a late body must not be read as the next request.
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self._app(scope, timed_receive, closing_send)
