"""A deadline for the headers of every request (docs/security.md, "Bounds").

A client that opens connections and trickles its bytes holds a connection for as long as it
likes: a few hundred such clients take every connection a server has. uvicorn closes idle
keep-alive connections (``TESSERA_KEEP_ALIVE_SECONDS``) but has no limit on how long headers
may take, so ``HeaderDeadlineProtocol`` is uvicorn's httptools protocol with one: from the
moment the connection opens (or its previous response was sent), the headers must be complete
within ``TESSERA_HEADER_TIMEOUT_SECONDS``; else the server answers 408 and closes the
connection. The body's deadline is the API's own (``api/slow_clients.py``).
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tessera.serving.config import ServerConfig

_HEADER_TIMEOUT_BODY = b'{"detail":"the request headers did not arrive in time"}'
_HEADER_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_HEADER_TIMEOUT_BODY)).encode() + b"\r\n\r\n"
) + _HEADER_TIMEOUT_BODY


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers are late. The deadline
    comes with the server's configuration (``ServerConfig``): a class defined here, not made
    per settings, so that uvicorn can hand it to the API processes it spawns."""

    _header_deadline: TimerHandle | None = None

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        if not isinstance(config, ServerConfig):
            raise TypeError("HeaderDeadlineProtocol needs a tessera.serving.config.ServerConfig")
        self._header_timeout_s = config.header_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # A pipelined request already sent its headers; otherwise the next one's start now.
        waiting = not self.pipeline
        super().on_response_complete()
        if waiting and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self._header_timeout_s, self._late)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _late(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.write(_HEADER_TIMEOUT_ANSWER)
            self.transport.close()
