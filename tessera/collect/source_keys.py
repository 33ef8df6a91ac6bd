"""Server sources prove their requests with the source's key (docs/security.md, "Trust model").

A public source's id sits in every page that carries the tracker, so it proves nothing. A server
source also has a key, known to the operator's systems only, and each of its requests carries
one of these proofs:

- the key itself as a bearer token: ``Authorization: Bearer <key>`` (for systems that keep a
  connection to Tessera, over TLS);
- a signature, Stripe/GitHub style, for webhooks sent by systems that sign what they send:
  ``X-Tessera-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is the HMAC-SHA256, with the
  key, of ``<t>.<path and query as sent>.<body>``. It is accepted for
  ``SIGNATURE_TOLERANCE_S`` around its time, so a captured request cannot be replayed later.

Keys are compared in constant time; a failure says what the source needs, never why a given
proof was wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.types import Scope

from tessera.collect.http import header
from tessera.errors import Unauthorized
from tessera.model.source import EventSource

SIGNATURE_HEADER = b"x-tessera-signature"
SIGNATURE_TOLERANCE_S = 300
KEY_BYTES = 32


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def sign(key: str, timestamp: int, target: bytes, body: bytes) -> str:
    """The signature header's value for a request to ``target`` (path and query)."""
    return f"t={timestamp},v1={_mac(key, timestamp, target, body)}"


def require_proof(scope: Scope, source: EventSource, body: bytes, now: float) -> None:
    """Nothing for a public source; for a server source, one valid proof or Unauthorized."""
    if not source.trusted:
        return
    if source.key is None:
        raise Unauthorized(
            f"event source {source.id!r} is a server source without a key yet: make one "
            f"(POST /event-source/{source.id}/key)"
        )
    bearer = _bearer(scope)
    if bearer is not None and hmac.compare_digest(bearer.encode(), source.key.encode()):
        return
    signature = header(scope, SIGNATURE_HEADER)
    if signature is not None and _valid(signature, source.key, _target(scope), body, now):
        return
    raise Unauthorized(
        f"event source {source.id!r} is a server source: send its key "
        "(Authorization: Bearer <key>) or sign the request (X-Tessera-Signature)"
    )


def _bearer(scope: Scope) -> str | None:
    value = header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _target(scope: Scope) -> bytes:
    raw: bytes = scope.get("raw_path") or str(scope.get("path", "")).encode()
    query: bytes = scope.get("query_string", b"")
    return raw + (b"?" + query if query else b"")


def _valid(signature: str, key: str, target: bytes, body: bytes, now: float) -> bool:
    fields: dict[str, str] = {}
    for part in signature.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(name, value)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_S:
        return False
    expected = _mac(key, timestamp, target, body)
    return hmac.compare_digest(fields.get("v1", "").encode(), expected.encode())


def _mac(key: str, timestamp: int, target: bytes, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + target + b"." + body
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()
