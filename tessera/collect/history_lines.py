"""One line of a history file: a Tracardi-shaped or a Tessera-shaped event, as JSON.

Both shapes name the event's id, type, visitor (``profile.id``, ``session.id``), properties
and context; they differ in where the time is and in how tags are kept:

- Tessera (what the profile export, GET /profile/{id}/export, lists under ``events``, and
  GET /event/{id} answers): ``time`` at the top, ``tags`` a list of strings;
- Tracardi (an event document of its Elasticsearch index): no top-level time; when the event
  happened is ``metadata.time.create`` when the tracker sent it, else ``metadata.time.insert``;
  ``tags`` is ``{"values": [...], "count": n}``.

Every event needs an id (a second import of the same file must meet its events again) and a
time with a time zone (a naive one is taken as UTC, as Tracardi writes them). Anything else
the document holds (Tracardi's ``request``, ``os``, ``device``; Tessera's ``metadata``) is not
taken: it describes how the event was stored then, not what happened. The event's source is
the import's (the file's source ids name sources of another installation).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from tessera.collect.payload import MAX_ID_LENGTH, check_depth, check_id
from tessera.errors import InvalidPayload
from tessera.model.event import checked_event_type
from tessera.pipeline.history import HistoryEvent
from tessera.pipeline.request import IncomingEvent

_decode = msgspec.json.Decoder().decode


class LineProblem(InvalidPayload):
    """A line that is no importable event; the message names the line."""


def decode_line(raw: bytes, line: int, *, max_depth: int) -> HistoryEvent:
    try:
        document = _decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise LineProblem(f"line {line}: not a JSON document ({exc})") from None
    if not isinstance(document, dict):
        raise LineProblem(f"line {line}: expected a JSON object, got {type(document).__name__}")
    try:
        return _event(document, line, max_depth)
    except InvalidPayload as problem:
        if isinstance(problem, LineProblem):
            raise
        raise LineProblem(f"line {line}: {problem.message}") from None


def _event(document: dict[str, Any], line: int, max_depth: int) -> HistoryEvent:
    event_id = document.get("id")
    if not isinstance(event_id, str):
        raise InvalidPayload("id: every imported event needs its id (a string)")
    check_id(event_id, "id")
    raw_type = document.get("type")
    if not isinstance(raw_type, str):
        raise InvalidPayload("type: expected a string")
    properties = _object(document, "properties", max_depth)
    context = _object(document, "context", max_depth)
    options = _object(document, "options", max_depth)
    return HistoryEvent(
        event=IncomingEvent(
            type=checked_event_type(raw_type, "type"),
            id=event_id,
            time=_time(document),
            properties=properties,
            context=context,
            options=options,
            tags=_tags(document.get("tags")),
        ),
        profile_id=_ref(document, "profile"),
        session_id=_ref(document, "session"),
    )


def _time(document: dict[str, Any]) -> datetime:
    if "time" in document and not isinstance(document["time"], dict):
        return _moment(document["time"], "time")
    # Tracardi: metadata.time.create (the tracker's time) else metadata.time.insert.
    metadata = document.get("metadata")
    times = metadata.get("time") if isinstance(metadata, dict) else None
    if isinstance(times, dict):
        for name in ("create", "insert"):
            if times.get(name) is not None:
                return _moment(times[name], f"metadata.time.{name}")
    raise InvalidPayload("time: missing (a Tessera event's `time`, or Tracardi's metadata.time)")


def _moment(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidPayload(f"{where}: expected an ISO 8601 date and time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidPayload(f"{where}: {value[:40]!r} is not an ISO 8601 date and time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _ref(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidPayload(f"{name}: expected an object with an id")
    record_id = value.get("id")
    if record_id is None or record_id == "":
        return None
    if not isinstance(record_id, str):
        raise InvalidPayload(f"{name}.id: expected a string")
    return check_id(record_id, f"{name}.id")


def _object(document: dict[str, Any], name: str, max_depth: int) -> dict[str, Any]:
    value = document.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidPayload(f"{name}: expected an object")
    check_depth(value, max_depth, name)
    return value


def _tags(value: Any) -> list[str]:
    if isinstance(value, dict):  # Tracardi: {"values": [...], "count": n}
        value = value.get("values")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise InvalidPayload("tags: expected a list of strings")
    if any(len(tag) > MAX_ID_LENGTH for tag in value):
        raise InvalidPayload(f"tags: a tag is longer than {MAX_ID_LENGTH} characters")
    return list(value)
