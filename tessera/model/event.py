"""A stored event and its metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from tessera.model.common import Ref


class Automation(msgspec.Struct):
    """Which rules and workflows processed the event, and the errors of failed runs."""

    rules: list[str] = msgspec.field(default_factory=list)
    workflows: list[str] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)


class EventMetadata(msgspec.Struct):
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
