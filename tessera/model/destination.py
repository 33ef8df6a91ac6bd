"""Destinations: other systems that hear about profiles and events, over an HTTP webhook.

A ``Destination`` says when to send (``on="event"``: for each event of the listed types that
matches the condition; ``on="profile"``: once per request that changed the profile) and what
(the rendered ``template``, or the plain documents). Sending never happens on the ingest path:
each send is an ``OutboxMessage`` kept in the store, delivered later by a background worker that
records every ``DeliveryAttempt`` and retries with backoff until the message is delivered or,
after ``max_attempts``, dead (listed as a dead letter, which can be replayed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

DestinationOn = Literal["profile", "event"]
HttpMethod = Literal["POST", "PUT", "PATCH"]
# "pending" covers both "not tried yet" and "waiting for its next try"; "held": kept before
# the records of its request were committed, not sent until they are (workflow/held_work.py).
MessageState = Literal["held", "pending", "delivered", "dead"]
MESSAGE_STATES: tuple[MessageState, ...] = ("held", "pending", "delivered", "dead")


class Destination(msgspec.Struct, kw_only=True):
    tenant: str
    id: str
    name: str
    created: datetime
    on: DestinationOn
    url: str
    method: HttpMethod = "POST"
    # Normalised event types (on="event" only); empty: every type.
    event_types: list[str] = msgspec.field(default_factory=list)
    # The condition language over event, profile and session; None: always.
    condition: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # Sent like ``headers`` but never answered by the API (only their names) nor logged.
    secret_headers: dict[str, str] = msgspec.field(default_factory=dict)
    # A JSON value whose templates are rendered over event/profile/session: the body sent.
    # None: {"event": …, "profile": …} for events, {"profile": …} for profiles.
    template: Any | None = None
    enabled: bool = True
    max_attempts: int = 6
    timeout_s: float = 5.0
    description: str = ""


class OutboxMessage(msgspec.Struct, kw_only=True):
    tenant: str
    id: str
    destination_id: str
    created: datetime
    # When the next attempt may start (while leased: when the lease runs out).
    due: datetime
    attempts: int = 0
    state: MessageState = "pending"
    # The rendered JSON body, fixed when the message was planned.
    body: Any = None
    last_error: str | None = None
    last_status: int | None = None
    event_id: str | None = None
    profile_id: str | None = None
    # Set by OutboxStore.claim_due: the claim an attempt must still hold to record its outcome.
    lease: str | None = None
    # The mark of the request that made it (model/applied.py): released by that request's
    # commit.
    request: str | None = None


class DeliveryAttempt(msgspec.Struct, kw_only=True):
    tenant: str
    message_id: str
    # 1 for the first attempt of the message (counting again from 1 after a replay).
    number: int
    time: datetime
    # The HTTP status answered, or None when there was no answer (refused, timed out …).
    status: int | None = None
    error: str | None = None
    duration_ms: float = 0.0


class DeliveryOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What an attempt leaves the message as: delivered, dead, or pending again at ``due``."""

    state: MessageState
    due: datetime | None = None
