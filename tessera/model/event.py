"""A stored event and its metadata."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

import msgspec

from tessera.errors import InvalidPayload
from tessera.model.common import Ref

MAX_EVENT_TYPE_LENGTH = 128
# Besides letters and digits (of any script, with their combining marks): the separators
# event names use in the wild ("checkout.step-2", "app:open", "$pageview", "order_paid").
# Nothing that means something elsewhere: no "/" (a path separator of /collect), no spaces
# (normalisation turns them into "-"), no quotes, no control characters (NUL, newlines).
EVENT_TYPE_PUNCTUATION = frozenset("-_.:$")
EVENT_TYPE_RULE = "letters, digits and - _ . : $"


class Automation(msgspec.Struct):
    """Which rules and workflows processed the event, and the errors of failed runs."""

    rules: list[str] = msgspec.field(default_factory=list)
    workflows: list[str] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)


class EventTime(msgspec.Struct):
    """Where Tracardi keeps an event's insert time, and Tessera its profiles' and sessions'."""

    insert: datetime


class EventMetadata(msgspec.Struct):
    # When the event was stored. Kept here, where earlier versions of Tessera stored it (and
    # where stored events, sorting and partitioning read it), and in `time.insert`, where
    # Tracardi and Tessera's own profiles and sessions keep it: both are written, always equal.
    insert: datetime
    status: str = "collected"
    valid: bool = True
    ip: str | None = None
    profile_less: bool = False
    errors: list[str] = msgspec.field(default_factory=list)
    # Set once a rule matched the event.
    automation: Automation | None = None
    # An event made inside Tessera (emitted by a workflow, segment entered/left), not collected.
    internal: bool = False
    # The mark of the request that stored it (model/applied.py), to tell a retry's own
    # half-stored events from those of other requests.
    request: str | None = None
    # Filled from `insert` when not given (so also for events stored before it existed).
    time: EventTime | None = None

    def __post_init__(self) -> None:
        if self.time is None:
            self.time = EventTime(insert=self.insert)


class Event(msgspec.Struct):
    id: str
    tenant: str
    type: str
    # When the event happened: the client's time when it sent one, else the time it arrived.
    time: datetime
    metadata: EventMetadata
    source: Ref
    session: Ref | None = None
    profile: Ref | None = None
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: list[str] = msgspec.field(default_factory=list)
    # The request it came in: headers (without credentials) and the client address.
    request: dict[str, Any] = msgspec.field(default_factory=dict)


def normalise_event_type(raw: str) -> str:
    """Tracardi's rule: trimmed, lower case, spaces become dashes ("Page View" → "page-view")."""
    return "-".join(raw.strip().lower().split())


def event_type_problem(event_type: str) -> str | None:
    """What is wrong with a normalised event type, or None when it is a good one."""
    if not event_type:
        return "must not be empty"
    if len(event_type) > MAX_EVENT_TYPE_LENGTH:
        return f"longer than {MAX_EVENT_TYPE_LENGTH} characters"
    for char in event_type:
        if not (
            char.isalnum()
            or char in EVENT_TYPE_PUNCTUATION
            or unicodedata.category(char).startswith("M")
        ):
            shown = ascii(char) if not char.isprintable() else repr(char)
            return f"{shown} is not allowed; an event type holds {EVENT_TYPE_RULE}"
    return None


def checked_event_type(raw: str, where: str) -> str:
    """``raw`` normalised; InvalidPayload (422) naming ``where`` when it is no event type."""
    event_type = normalise_event_type(raw)
    problem = event_type_problem(event_type)
    if problem is not None:
        raise InvalidPayload(f"{where}: {problem}")
    return event_type


def event_document(event: Event) -> dict[str, Any]:
    """The event as the rules see it: plain JSON values (times as ISO 8601 strings)."""
    document: dict[str, Any] = msgspec.to_builtins(event)
    return document
