"""The bare ASGI plumbing /track and /collect need: reading a bounded body, request metadata,
and JSON answers. Kept free of any framework so the hot path stays short."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.types import Receive, Scope, Send

from tessera.errors import BadRequest, PayloadTooLarge

# The request headers events keep (``request.headers``), for analytics and debugging. An
# allow-list, not a deny-list: a header a client or a proxy invents (X-Auth-Token, Api-Key,
# X-Access-Token …) may carry a credential under any name, so only these are stored, plus
# those TESSERA_STORED_HEADERS adds (settings.py refuses names that look like credentials).
# Forwarding headers (X-Forwarded-For …) are not kept: the client's address is stored as
# ``metadata.ip``. Listed in docs/security.md.
STORED_HEADERS = frozenset(
    {
        "user-agent",
        "accept",
        "accept-language",
        "accept-encoding",
        "content-type",
        "referer",
        "origin",
        "host",
        "dnt",
        "sec-gpc",
        "save-data",
        "sec-ch-ua",
        "sec-ch-ua-mobile",
        "sec-ch-ua-platform",
        "sec-ch-ua-platform-version",
        "sec-ch-ua-model",
        "sec-fetch-site",
        "sec-fetch-mode",
        "sec-fetch-dest",
    }
)

CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"content-type"),
    (b"access-control-max-age", b"86400"),
]

_encode = msgspec.json.Encoder().encode


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequest("the Content-Length header is not a number") from None
        if length > limit:
            raise PayloadTooLarge(f"the body has {length} bytes, the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def stored_headers(scope: Scope, allowed: frozenset[str]) -> dict[str, str]:
    """The request's headers that are on the ``allowed`` list (lower-case names; ASGI servers
    give lower-case names too)."""
    kept: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = key.decode("latin-1").lower()
        if name in allowed:
            kept[name] = value.decode("latin-1")
    return kept


def client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


async def send_json(send: Send, status: int, body: Any, extra: list[tuple[bytes, bytes]]) -> None:
    payload = _encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_empty(send: Send, status: int, extra: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), *extra],
        }
    )
    await send({"type": "http.response.body", "body": b""})
