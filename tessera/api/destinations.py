"""Destinations (webhooks fed with profiles and events) and their outbox, over HTTP.

- ``POST /destination``: create, or replace the destination with the same id (201 / 200)
- ``GET /destinations``: list, oldest first
- ``GET|PATCH|DELETE /destination/{id}``, ``POST /destination/{id}/enable`` and ``/disable``
- ``GET /destination/{id}/deliveries``: its latest messages and how many are in each state
- ``GET /destinations/dead-letters``: messages that ran out of attempts, newest first, with total
- ``POST /destinations/dead-letters/{message_id}/replay``: send a dead message again
- ``GET /outbox/{message_id}`` and ``GET /outbox/{message_id}/attempts``

A destination is checked before it is stored (URL scheme, condition, templates, headers: 422
naming the problem) and every change applies to collection at once through
``runtime.destinations`` (it stores it and forgets its cache:
storage/write_through.py). Secret headers are accepted and sent but never answered: a
destination is shown with ``secret_header_names`` instead, and no error repeats their values;
a password in the URL (``user:password@``) is answered as ``********``.
``POST`` replaces the whole destination, secret headers included; ``PATCH`` keeps them unless
``secret_headers`` is given (then it replaces them all). A secret sent as ``********`` keeps its
stored value, and so does a URL's password; but secrets are only kept while the URL stays the
same: a new URL needs them sent again (422 naming them; tessera/security/kept_secrets.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import httpx
import msgspec
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.api.ids import url_safe_id
from tessera.api.paging import ListOffset
from tessera.destinations.checks import check_destination
from tessera.errors import Conflict, InvalidPayload, NotFound
from tessera.model.common import DEFAULT_TENANT, new_id, utcnow
from tessera.model.destination import Destination, OutboxMessage
from tessera.model.event import checked_event_type
from tessera.outbound.resolver import literal_address
from tessera.runtime import Runtime
from tessera.security.kept_secrets import (
    REDACTED,
    restore_kept_secrets,
    restore_url_password,
    url_shown,
)

router = APIRouter(tags=["destinations"], dependencies=[Depends(current_user)])

DestinationId = Annotated[str, Path(max_length=128)]
MessageId = Annotated[str, Path(max_length=64)]
MAX_TIMEOUT_S = 60.0  # the delivery worker's lease is longer than this (worker.DEFAULT_LEASE_S)


class _DestinationFields(BaseModel):
    # A misspelt field (say "secret_header") must not be dropped without a word, yet pydantic's
    # own refusal would repeat its value (perhaps a secret): kept aside, refused by _no_extra.
    model_config = ConfigDict(extra="allow")


def _no_extra(body: _DestinationFields) -> None:
    unknown = sorted(body.model_extra or {})
    if unknown:
        raise InvalidPayload(f"unknown field(s): {', '.join(unknown)}")


class DestinationIn(_DestinationFields):
    id: str | None = Field(None, description="Kept when given (URL-safe, ≤128); else generated")
    name: str = Field(min_length=1, max_length=255)
    description: str = Field("", max_length=10_000)
    on: Literal["profile", "event"] = Field(
        description="'event': each matching event; 'profile': when a request changed the profile"
    )
    event_types: list[str] = Field(
        default_factory=list, max_length=200, description="Only for on='event'; empty: any type"
    )
    condition: str | None = Field(
        None, max_length=10_000, description="Condition language over event, profile, session"
    )
    url: str = Field(min_length=1, max_length=2048, description="http:// or https://")
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    # Typed loosely here and checked by _secrets, so a refused value is never repeated in the
    # validation error's answer (pydantic's errors show the input).
    secret_headers: Any = Field(
        default_factory=dict,
        description="Name → value, sent like headers (e.g. Authorization) but never shown again",
    )
    template: Any = Field(
        None,
        description="The JSON body, with '{{ event.x }}' / '{{ profile.y }}' templates; "
        "null: the event (and profile) or the profile as they are",
    )
    enabled: bool = True
    max_attempts: int = Field(6, ge=1, le=50)
    timeout_s: float = Field(5.0, gt=0, le=MAX_TIMEOUT_S)

    @field_validator("id")
    @classmethod
    def _url_safe(cls, value: str | None) -> str | None:
        return url_safe_id(value)


class DestinationPatch(_DestinationFields):
    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=10_000)
    on: Literal["profile", "event"] | None = None
    event_types: list[str] | None = Field(None, max_length=200)
    condition: str | None = Field(None, max_length=10_000)
    url: str | None = Field(None, min_length=1, max_length=2048)
    method: Literal["POST", "PUT", "PATCH"] | None = None
    headers: dict[str, str] | None = Field(None, max_length=50)
    secret_headers: Any = None
    template: Any = None
    enabled: bool | None = None
    max_attempts: int | None = Field(None, ge=1, le=50)
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)


# Fields where null means something ("always", "the plain documents"); for the others a null
# in a PATCH means "unchanged", as for processing rules.
_NULLABLE = frozenset({"condition", "template"})


MAX_SECRET_HEADERS = 20


def _secrets(raw: Any) -> dict[str, str]:
    """The secret headers, checked without ever quoting a value."""
    if not isinstance(raw, dict):
        raise InvalidPayload("secret_headers: must be an object of header name → value")
    if len(raw) > MAX_SECRET_HEADERS:
        raise InvalidPayload(f"secret_headers: at most {MAX_SECRET_HEADERS} headers")
    for name, value in raw.items():
        if not isinstance(value, str):
            raise InvalidPayload(f"secret_headers: the value of {name!r} must be a string")
    return dict(raw)


def _build(document: dict[str, Any]) -> Destination:
    document["secret_headers"] = _secrets(document.get("secret_headers", {}))
    document["event_types"] = sorted(
        {checked_event_type(raw, "event_types") for raw in document.get("event_types") or []}
    )
    try:
        destination = msgspec.convert(document, Destination)
    except msgspec.ValidationError as exc:
        raise InvalidPayload(str(exc)) from exc
    check_destination(destination)
    return destination


def destination_view(destination: Destination) -> dict[str, Any]:
    """The destination as answered: secret headers by name only, a URL's password hidden."""
    document: dict[str, Any] = msgspec.to_builtins(destination)
    document["secret_header_names"] = sorted(document.pop("secret_headers"))
    document["url"] = url_shown(destination.url)
    return document


def _keep_secrets(document: dict[str, Any], previous: Destination | None) -> None:
    """Secrets sent as REDACTED (secret header values, the URL's password) get their stored
    values back, as long as the URL stays what it was."""
    stored = msgspec.to_builtins(previous) if previous is not None else None
    if isinstance(document.get("url"), str):
        document["url"] = restore_url_password(document["url"], stored and stored["url"])
    sent = document.get("secret_headers")
    if isinstance(sent, dict):
        restore_kept_secrets(
            document, stored, [("secret_headers", name) for name in sent], ("url",)
        )


def message_view(message: OutboxMessage) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(message)
    document.pop("lease")  # the worker's claim; means nothing outside it
    return document


async def _stored(runtime: Runtime, destination_id: str) -> Destination:
    destination = await runtime.storage.destinations.get(DEFAULT_TENANT, destination_id)
    if destination is None:
        raise NotFound(f"destination {destination_id!r} does not exist")
    return destination


def _check_address(runtime: Runtime, destination: Destination) -> None:
    """A URL written with an address the request-forgery policy refuses is a 422 at once;
    names are resolved, and every address checked again, at each delivery."""
    address = literal_address(httpx.URL(destination.url).host)
    reason = runtime.outbound.refusal(address) if address is not None else None
    if reason is not None:
        raise InvalidPayload(f"url: {address} is {reason}")


async def _store(runtime: Runtime, destination: Destination, status_code: int = 200) -> Response:
    await runtime.destinations.save(destination)
    return json_response(destination_view(destination), status_code=status_code)


async def _message(runtime: Runtime, message_id: str) -> OutboxMessage:
    message = await runtime.storage.outbox.get(DEFAULT_TENANT, message_id)
    if message is None:
        raise NotFound(f"outbox message {message_id!r} does not exist")
    return message


@router.post("/destination", status_code=201)
async def save_destination(body: DestinationIn, runtime: RuntimeDep) -> Response:
    """Create, or replace the destination with the same id (its creation time is kept)."""
    _no_extra(body)
    destination_id = body.id or new_id()
    previous = await runtime.storage.destinations.get(DEFAULT_TENANT, destination_id)
    document = body.model_dump(exclude=set(body.model_extra or {}))
    document.update(
        tenant=DEFAULT_TENANT,
        id=destination_id,
        created=previous.created if previous else utcnow(),
    )
    _keep_secrets(document, previous)
    destination = _build(document)
    _check_address(runtime, destination)
    return await _store(runtime, destination, status_code=200 if previous else 201)


@router.get("/destinations")
async def list_destinations(runtime: RuntimeDep) -> Response:
    destinations = await runtime.storage.destinations.list(DEFAULT_TENANT)
    return json_response(
        {"total": len(destinations), "result": [destination_view(d) for d in destinations]}
    )


@router.get("/destinations/dead-letters")
async def list_dead_letters(
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: ListOffset = 0,
) -> Response:
    """Messages that ran out of attempts (or whose destination went away), newest first."""
    messages, total = await runtime.storage.outbox.dead_letters(
        DEFAULT_TENANT, limit=limit, offset=offset
    )
    return json_response({"total": total, "result": [message_view(m) for m in messages]})


@router.post("/destinations/dead-letters/{message_id}/replay")
async def replay_dead_letter(message_id: MessageId, runtime: RuntimeDep) -> Response:
    """Make a dead message pending again, due now, with its attempt count reset (its earlier
    attempts stay listed). 409 when the message is not dead."""
    message = await _message(runtime, message_id)
    if message.state != "dead":
        raise Conflict(f"outbox message {message_id!r} is {message.state}, not dead")
    replayed = await runtime.storage.outbox.replay(DEFAULT_TENANT, message_id, utcnow())
    if replayed is None:  # replayed by someone else a moment ago
        raise Conflict(f"outbox message {message_id!r} is no longer dead")
    runtime.delivery.wake()
    return json_response(message_view(replayed))


@router.get("/destination/{destination_id}")
async def get_destination(destination_id: DestinationId, runtime: RuntimeDep) -> Response:
    return json_response(destination_view(await _stored(runtime, destination_id)))


@router.patch("/destination/{destination_id}")
async def update_destination(
    destination_id: DestinationId, body: DestinationPatch, runtime: RuntimeDep
) -> Response:
    _no_extra(body)
    destination = await _stored(runtime, destination_id)
    changes = {
        name: value
        for name, value in body.model_dump(exclude_unset=True).items()
        if value is not None or name in _NULLABLE
    }
    document: dict[str, Any] = msgspec.to_builtins(destination)
    document.update(changes)
    if "secret_headers" not in changes:
        # Kept as they are: the same rule as when they are sent back as REDACTED.
        document["secret_headers"] = dict.fromkeys(destination.secret_headers, REDACTED)
    _keep_secrets(document, destination)
    changed = _build(document)
    _check_address(runtime, changed)
    return await _store(runtime, changed)


@router.delete("/destination/{destination_id}", status_code=204)
async def delete_destination(destination_id: DestinationId, runtime: RuntimeDep) -> Response:
    """Its messages still waiting become dead letters when their turn comes."""
    if not await runtime.destinations.delete(DEFAULT_TENANT, destination_id):
        raise NotFound(f"destination {destination_id!r} does not exist")
    return Response(status_code=204)


async def _enable(runtime: Runtime, destination_id: str, enabled: bool) -> Response:
    destination = await _stored(runtime, destination_id)
    if destination.enabled == enabled:
        return json_response(destination_view(destination))
    return await _store(runtime, msgspec.structs.replace(destination, enabled=enabled))


@router.post("/destination/{destination_id}/enable")
async def enable_destination(destination_id: DestinationId, runtime: RuntimeDep) -> Response:
    return await _enable(runtime, destination_id, True)


@router.post("/destination/{destination_id}/disable")
async def disable_destination(destination_id: DestinationId, runtime: RuntimeDep) -> Response:
    """No new messages; those waiting become dead letters (replay them once enabled again)."""
    return await _enable(runtime, destination_id, False)


@router.get("/destination/{destination_id}/deliveries")
async def list_deliveries(
    destination_id: DestinationId,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    """The destination's latest messages, newest first, and its message count per state."""
    await _stored(runtime, destination_id)
    outbox = runtime.storage.outbox
    messages = await outbox.recent(DEFAULT_TENANT, destination_id, limit=limit)
    counts = await outbox.counts(DEFAULT_TENANT, destination_id)
    return json_response({"counts": counts, "result": [message_view(m) for m in messages]})


@router.get("/outbox/{message_id}")
async def get_message(message_id: MessageId, runtime: RuntimeDep) -> Response:
    return json_response(message_view(await _message(runtime, message_id)))


@router.get("/outbox/{message_id}/attempts")
async def list_attempts(message_id: MessageId, runtime: RuntimeDep) -> Response:
    """Every attempt to deliver the message, oldest first."""
    await _message(runtime, message_id)
    attempts = await runtime.storage.outbox.attempts(DEFAULT_TENANT, message_id)
    return json_response({"total": len(attempts), "result": attempts})
