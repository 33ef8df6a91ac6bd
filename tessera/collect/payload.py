"""The tracker payload, compatible with Tracardi's, and its decoding with clear errors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from tessera.errors import BadRequest, InvalidPayload

RecordId = Annotated[str, msgspec.Meta(max_length=128)]
EventTypeName = Annotated[str, msgspec.Meta(max_length=128)]


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
    for name, value in (("context", payload.context), ("properties", payload.properties)):
        check_depth(value, max_depth, name)
    for index, event in enumerate(payload.events):
        for name, value in (("properties", event.properties), ("context", event.context)):
            check_depth(value, max_depth, f"events[{index}].{name}")
    return payload


def decode_json_object(body: bytes, *, max_depth: int, where: str) -> dict[str, Any]:
    value = _decode(body, _decode_any)
    if not isinstance(value, dict):
        raise InvalidPayload(f"{where}: expected a JSON object, got {type(value).__name__}")
    check_depth(value, max_depth, where)
    return value


def _decode(body: bytes, decode: Any) -> Any:
    try:
        return decode(body)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except msgspec.ValidationError as exc:
        raise InvalidPayload(_readable(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def _readable(message: str) -> str:
    # msgspec says "Expected `str`, got `int` - at `$.events[0].type`"; lead with the place.
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
