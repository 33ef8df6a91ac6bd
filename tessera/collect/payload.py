"""The tracker payload, compatible with Tracardi's, and its decoding with clear errors."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import msgspec

from tessera.errors import BadRequest, InvalidPayload

# Ids travel in URL paths (GET /event/{id}), where "/" cannot be told from a separator, and
# in logs, where control characters do harm: neither is allowed. 128 characters at most.
ID_PATTERN = r"^[^/\x00-\x1f\x7f]*$"
MAX_ID_LENGTH = 128
RecordId = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
EventTypeName = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
_ID_RE = re.compile(ID_PATTERN)
UTF8_BOM = b"\xef\xbb\xbf"


class IdRef(msgspec.Struct):
    # Trackers that have not stored an id yet send null or ""; both mean "none yet".
    id: RecordId | None = None


class SourceIdRef(msgspec.Struct):
    id: RecordId


class EventIn(msgspec.Struct):
    type: EventTypeName
    id: RecordId | None = None
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: list[str] = msgspec.field(default_factory=list)
    time: datetime | None = None


class TrackPayload(msgspec.Struct):
    source: SourceIdRef
    events: list[EventIn]
    session: IdRef | None = None
    profile: IdRef | None = None
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    options: dict[str, Any] = msgspec.field(default_factory=dict)


_decode_track = msgspec.json.Decoder(TrackPayload).decode
_decode_any = msgspec.json.Decoder().decode


def decode_track(body: bytes, *, max_events: int, max_depth: int) -> TrackPayload:
    payload: TrackPayload = _decode(body, _decode_track)
    if not payload.events:
        raise InvalidPayload("events: at least one event is required")
    if len(payload.events) > max_events:
        raise InvalidPayload(
            f"events: {len(payload.events)} events in one request, the limit is {max_events}"
        )
    # Every level of nesting needs its own '{' or '[' somewhere in the body, so a body with
    # no more of them than the limit cannot be too deep: most tracker requests skip the walk.
    if body.count(b"{") + body.count(b"[") <= max_depth:
        return payload
    for name, value in (
        ("context", payload.context),
        ("properties", payload.properties),
        ("options", payload.options),
    ):
        check_depth(value, max_depth, name)
    for index, event in enumerate(payload.events):
        for name, value in (
            ("properties", event.properties),
            ("context", event.context),
            ("options", event.options),
        ):
            check_depth(value, max_depth, f"events[{index}].{name}")
    return payload


def check_id(value: str, where: str) -> str:
    """The same rule for ids that arrive in a URL path as for ids in a payload."""
    if not value or len(value) > MAX_ID_LENGTH or not _ID_RE.match(value):
        raise InvalidPayload(
            f"{where}: must be 1-{MAX_ID_LENGTH} characters without '/' or control characters"
        )
    return value


def decode_json_object(body: bytes, *, max_depth: int, where: str) -> dict[str, Any]:
    value = _decode(body, _decode_any)
    if not isinstance(value, dict):
        raise InvalidPayload(f"{where}: expected a JSON object, got {type(value).__name__}")
    check_depth(value, max_depth, where)
    return value


def _decode(body: bytes, decode: Any) -> Any:
    if body.startswith(UTF8_BOM):  # allowed by RFC 8259 to be ignored; some clients send it
        body = body[len(UTF8_BOM) :]
    try:
        return decode(body)
    except UnicodeDecodeError:
        raise BadRequest(_utf8_problem(body)) from None
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except msgspec.ValidationError as exc:
        raise InvalidPayload(_readable(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def _utf8_problem(body: bytes) -> str:
    # msgspec counts from the start of the broken string; count from the start of the body.
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}"
    return "the body is not valid UTF-8"


def _readable(message: str) -> str:
    # msgspec says "Expected `str`, got `int` - at `$.events[0].type`"; lead with the place.
    if "matching regex" in message:
        message = (
            message.split("`")[0]
            + "an id without '/' or control characters - at `"
            + (message.partition(" - at `")[2])
        )
    text, _, place = message.partition(" - at `")
    if place:
        return f"{place.rstrip('`').removeprefix('$.')}: {text}"
    return message


def check_depth(value: Any, limit: int, where: str) -> None:
    """Refuse objects nested deeper than ``limit``; iterative, so no input can overflow it."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise InvalidPayload(f"{where}: nested deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend(
                (child, depth + 1) for child in node.values() if isinstance(child, dict | list)
            )
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
