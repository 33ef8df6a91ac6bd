"""Lean HTTP/1.1 connections to Elasticsearch for the two calls on every request's path: the
writer's bulk and the realtime multi-get by id.

Why not the official client for these: each of its calls goes through the client's header
and parameter handling, the transport's node selection and retry loop, and aiohttp's request
machinery, about 250 µs of the API process's CPU per call on this project's measurements —
more than Elasticsearch takes to answer a small mget. Here a call is one pre-encoded request
written to a kept-alive socket and one response parsed by httptools (C) and msgspec: the body
of a bulk is the bytes the writer built, never re-serialised.

Everything else (templates, searches, reshards, snapshots) keeps the official client; both
speak to the same hosts with the same credentials, certificates, timeout and retry settings
(client.ElasticConnection), and failures are raised as the very exceptions the official client
raises (``elastic_transport.ConnectionError``/``ConnectionTimeout``; ``ApiError`` and its
subclasses for an error status), so the writer's and the readers' handling of outages and
refusals is the same whichever path a call took.

- Connections are kept alive in a pool per host (at most ``connections_per_host`` open; a
  caller beyond that waits for one to come back). A connection that timed out, broke or was
  answered with ``Connection: close`` is closed, never reused: its next bytes could belong to
  the abandoned answer.
- Retries as the official client is configured (client.open_client): a failed connection, or
  an answer 429, 502, 503 or 504, is sent again up to ``retries`` times, to the next host where
  there are several; a timeout never is (one request must not wait several timeouts).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

import httptools
import msgspec
from elastic_transport import ApiResponseMeta, ConnectionTimeout, HttpHeaders, NodeConfig
from elastic_transport import ConnectionError as TransportConnectionError
from elasticsearch import ApiError
from elasticsearch.exceptions import HTTP_EXCEPTIONS

from tessera.storage.elastic.client import ElasticConnection

Answer = dict[str, Any]

# Statuses the official client is told to retry (its default retry_on_status).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_CONNECTIONS_PER_HOST = 16

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class _Host:
    scheme: str
    host: str
    port: int
    path_prefix: str
    # The `Host` and `Authorization` header lines, ready to send.
    header_lines: bytes

    @property
    def node(self) -> NodeConfig:
        return NodeConfig(self.scheme, self.host, self.port, path_prefix=self.path_prefix)


def _hosts(connection: ElasticConnection) -> list[_Host]:
    found: list[_Host] = []
    for url in connection.hosts:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        scheme = parts.scheme or "http"
        host = parts.hostname or "localhost"
        port = parts.port or (443 if scheme == "https" else 9200)
        username, password = connection.username, connection.password
        if username is None and parts.username is not None:
            username, password = unquote(parts.username), unquote(parts.password or "")
        lines = f"Host: {host}:{port}\r\n".encode("latin-1")
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            lines += f"Authorization: Basic {token}\r\n".encode("latin-1")
        found.append(_Host(scheme, host, port, parts.path.rstrip("/"), lines))
    return found


def _ssl_context(verify_certs: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Response:
    """One answer as httptools reports it."""

    __slots__ = ("body", "done", "headers", "keep_alive", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.keep_alive = True
        self.done = False


class _Connection(asyncio.Protocol):
    """One kept-alive socket: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response = _Response()
        self._waiter: asyncio.Future[_Response] | None = None
        self.usable = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self.usable = True

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportConnectionError(f"unreadable answer from Elasticsearch: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._fail(TransportConnectionError(f"connection to Elasticsearch lost: {exc}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._response.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._response.body += body

    def on_message_complete(self) -> None:
        response, self._response = self._response, _Response()
        response.status = self._parser.get_status_code()
        response.keep_alive = self._parser.should_keep_alive()
        response.done = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, error: Exception) -> None:
        self.usable = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    async def exchange(self, request: bytes, timeout_s: float) -> _Response:
        assert self._transport is not None and self._waiter is None
        waiter: asyncio.Future[_Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(request)
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter
        except BaseException:
            # Timed out or cancelled: the answer may still come, and must not be read as the
            # next request's.
            self._waiter = None
            self.close()
            raise

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            self._transport.close()


class _Pool:
    """Kept-alive connections to one host."""

    def __init__(self, host: _Host, limit: int, ssl_context: ssl.SSLContext | None) -> None:
        self.host = host
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(limit)
        self._ssl = ssl_context

    async def exchange(self, request: bytes, timeout_s: float) -> _Response:
        deadline = time.monotonic() + timeout_s
        async with asyncio.timeout(timeout_s):
            await self._slots.acquire()
        try:
            connection = await self._connection(deadline)
            response = await connection.exchange(request, max(0.0, deadline - time.monotonic()))
            if response.keep_alive and connection.usable:
                self._idle.append(connection)
            else:
                connection.close()
            return response
        finally:
            self._slots.release()

    async def _connection(self, deadline: float) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                _transport, connection = await loop.create_connection(
                    _Connection,
                    self.host.host,
                    self.host.port,
                    ssl=self._ssl,
                    server_hostname=self.host.host if self._ssl is not None else None,
                )
        except TimeoutError as exc:
            raise ConnectionTimeout(f"connecting to Elasticsearch timed out: {exc}") from exc
        except OSError as exc:
            raise TransportConnectionError(f"cannot connect to Elasticsearch: {exc}") from exc
        return connection

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class ElasticWire:
    """The hot path's bulk and multi-get, over the pools of every host of ELASTIC_HOST."""

    def __init__(
        self,
        connection: ElasticConnection,
        *,
        connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST,
    ) -> None:
        hosts = _hosts(connection)
        context = _ssl_context(connection.verify_certs)
        self._pools = [
            _Pool(host, connections_per_host, context if host.scheme == "https" else None)
            for host in hosts
        ]
        self._next = 0
        self._timeout_s = connection.request_timeout_s
        self._retries = connection.retries

    async def bulk(self, body: bytes, *, refresh: str, filter_path: list[str]) -> Answer:
        """POST _bulk with an NDJSON body already built."""
        query = f"refresh={refresh}&filter_path={quote(','.join(filter_path), safe=',*.')}"
        return await self._call("/_bulk", query, body, b"application/x-ndjson")

    async def mget(self, docs: list[dict[str, str]], *, realtime: bool = True) -> Answer:
        """POST _mget of (index, id) pairs."""
        query = "realtime=true" if realtime else "realtime=false"
        return await self._call("/_mget", query, _encode({"docs": docs}), b"application/json")

    async def close(self) -> None:
        for pool in self._pools:
            pool.close()

    async def _call(self, path: str, query: str, body: bytes, content_type: bytes) -> Answer:
        attempts = self._retries + 1
        for attempt in range(attempts):
            pool = self._pools[self._next % len(self._pools)]
            last = attempt == attempts - 1
            request = _request(pool.host, path, query, body, content_type)
            started = time.monotonic()
            try:
                response = await pool.exchange(request, self._timeout_s)
            except TimeoutError as exc:
                raise ConnectionTimeout(
                    f"Elasticsearch did not answer within {self._timeout_s} s"
                ) from exc
            except TransportConnectionError:
                self._next += 1  # the next host, where there are several
                if last:
                    raise
                continue
            if response.status in RETRY_STATUSES and not last:
                self._next += 1
                continue
            return _answer(pool.host, response, time.monotonic() - started)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _request(host: _Host, path: str, query: str, body: bytes, content_type: bytes) -> bytes:
    target = f"{host.path_prefix}{path}?{query}".encode("latin-1")
    return b"".join(
        (
            b"POST ",
            target,
            b" HTTP/1.1\r\n",
            host.header_lines,
            b"Content-Type: ",
            content_type,
            b"\r\nAccept: application/json\r\nContent-Length: ",
            str(len(body)).encode("ascii"),
            b"\r\n\r\n",
            body,
        )
    )


def _answer(host: _Host, response: _Response, duration_s: float) -> Answer:
    """The decoded body of a 2xx answer; any other status raised as the official client does
    (the subclass of ApiError for its status, the error's type as its message)."""
    try:
        body: Any = _decode(response.body) if response.body else None
    except msgspec.DecodeError:
        body = bytes(response.body).decode("utf-8", "replace")
    if 200 <= response.status < 300 and isinstance(body, dict):
        return body
    meta = ApiResponseMeta(
        status=response.status,
        http_version="1.1",
        headers=HttpHeaders(response.headers),
        duration=duration_s,
        node=host.node,
    )
    message: Any = str(body)
    if isinstance(body, dict):
        error = body.get("error", message)
        message = error["type"] if isinstance(error, dict) and "type" in error else error
    raise HTTP_EXCEPTIONS.get(response.status, ApiError)(message=message, meta=meta, body=body)
