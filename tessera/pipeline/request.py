"""What the pipeline receives from collection, and what it answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tessera.model.source import EventSource


@dataclass(slots=True)
class IncomingEvent:
    type: str
    id: str | None = None
    time: datetime | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class IncomingBatch:
    tenant: str
    source: EventSource
    events: list[IncomingEvent]
    # Profile-less events (webhooks) belong to no profile and no session.
    profile_less: bool = False
    session_id: str | None = None
    profile_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    client_ip: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # TRACK_DEBUG is on and the client asked for the debugger: the answer carries the traces.
    debug: bool = False
    # Async intake: the id the answer promised for a visitor the request does not name (no
    # profile id, no known session), so the worker creates the profile under that id.
    new_profile_id: str | None = None
    # A history import (pipeline/history.py): the batch is taken in as of its events' own
    # times, and no live automation (rules, workflows, segments, destinations) runs for it.
    history: bool = False


@dataclass(slots=True)
class IngestResult:
    profile_id: str | None
    session_id: str | None
    event_ids: list[str]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Workflow traces, when the request asked for them (TRACK_DEBUG).
    debug: list[dict[str, Any]] | None = None
    # A merge the workflows asked for that needs locks the request could not take at once:
    # (merge-key values before the workflows, merge-on paths); made once the locks are free.
    deferred: tuple[dict[str, Any], list[str]] | None = None


# What takes a checked request: the pipeline itself (sync mode) or the queue intake (async).
Intake = Callable[[IncomingBatch], Awaitable[IngestResult]]
