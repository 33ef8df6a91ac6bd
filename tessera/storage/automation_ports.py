"""Storage ports of the automation features: rules, workflows, segments, destinations, the
key-value memory of workflows and the schedule of delayed workflow steps.

Kept apart from ports.py like the processing rules' port; nothing outside ``storage/`` knows
which backend implements them.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, Protocol, TypeVar

import msgspec

from tessera.model.destination import DeliveryAttempt, DeliveryOutcome, OutboxMessage

T = TypeVar("T")


class DocumentStore(Protocol[T]):
    """Configuration documents of one kind (rules, workflows, segments, destinations), keyed by
    (tenant, id), kept whole."""

    async def get(self, tenant: str, item_id: str) -> T | None: ...

    async def list(self, tenant: str) -> builtins.list[T]:
        """Every document of the tenant, oldest first."""
        ...

    async def save(self, item: T) -> None:
        """Create, or replace the one with the same id."""
        ...

    async def delete(self, tenant: str, item_id: str) -> bool: ...


class KeyValueStore(Protocol):
    """The memory workflows read and write: values with a time to live."""

    async def get(self, tenant: str, key: str, now: datetime) -> Any | None:
        """The value, or None when there is none or it has expired."""
        ...

    async def set(
        self, tenant: str, key: str, value: Any, *, ttl_s: float | None, now: datetime
    ) -> None: ...

    async def delete(self, tenant: str, key: str) -> bool: ...

    async def purge_expired(self, now: datetime) -> int: ...


class ScheduledStep(msgspec.Struct, kw_only=True):
    """A workflow that continues later: from ``node_id``'s ``port`` with ``payload``."""

    tenant: str
    id: str
    due: datetime
    workflow_id: str
    workflow_version: int
    node_id: str
    port: str
    payload: Any
    event_id: str
    profile_id: str | None = None
    session_id: str | None = None
    created: datetime
    attempts: int = 0
    # The mark of the request (or step) that scheduled it (model/applied.py).
    request: str | None = None


class ScheduleStore(Protocol):
    """The schedule of delayed steps. A step is added *held* before the records of the
    request that scheduled it are committed, and released by that commit: it never runs for a
    request that was not stored, and is not lost by a crash between the commit and the
    release (workflow/held_work.py finishes the job)."""

    async def add(self, steps: builtins.list[ScheduledStep], *, held: bool = False) -> None:
        """Keep the steps; one with an id already kept is left as it is (a retry of the
        request schedules the same ids). ``held``: not due until ``release``."""
        ...

    async def release(self, tenant: str, request: str) -> int:
        """The held steps of ``request`` become due as scheduled; how many."""
        ...

    async def held(self, before: datetime, *, limit: int) -> builtins.list[ScheduledStep]:
        """Held steps created before ``before``, oldest first."""
        ...

    async def drop_held(self, tenant: str, request: str) -> int:
        """Forget the held steps of a request that was never stored; how many."""
        ...

    async def claim_due(
        self, now: datetime, *, limit: int, lease_s: float
    ) -> builtins.list[ScheduledStep]:
        """Steps due by ``now``, leased for ``lease_s`` so another runner does not take them;
        a step whose lease ran out (its runner died) is due again."""
        ...

    async def done(self, tenant: str, step_id: str) -> None: ...

    async def pending(self, tenant: str) -> builtins.list[ScheduledStep]: ...


class OutboxStore(Protocol):
    """Messages waiting to be delivered to destinations, and what each delivery attempt did.

    A message is sent by one worker at a time: ``claim_due`` leases it (its ``due`` moves to the
    lease's end and it gets a new ``lease`` token), and ``record_attempt`` changes its state only
    while that lease is still the message's. A worker that died leaves a lease that runs out,
    after which the message is due again: delivery is at least once.
    """

    async def add(self, messages: builtins.list[OutboxMessage]) -> None:
        """Keep the messages in their state; one with an id already kept is left as it is (a
        retry of the request plans the same ids). Messages in state ``held`` are not sent
        until ``release`` (see ScheduleStore for why)."""
        ...

    async def release(self, tenant: str, request: str, now: datetime) -> int:
        """The held messages of ``request`` become pending, due ``now``; how many."""
        ...

    async def held(self, before: datetime, *, limit: int) -> builtins.list[OutboxMessage]:
        """Held messages created before ``before``, oldest first."""
        ...

    async def drop_held(self, tenant: str, request: str) -> int:
        """Forget the held messages of a request that was never stored; how many."""
        ...

    async def get(self, tenant: str, message_id: str) -> OutboxMessage | None: ...

    async def claim_due(
        self, now: datetime, *, limit: int, lease_s: float
    ) -> builtins.list[OutboxMessage]:
        """Pending messages due by ``now`` (oldest due first), leased for ``lease_s``."""
        ...

    async def record_attempt(
        self, message: OutboxMessage, attempt: DeliveryAttempt, outcome: DeliveryOutcome
    ) -> bool:
        """Keep the attempt and apply its outcome; False (outcome not applied) when the
        message's lease is no longer ``message.lease``: another worker took it since."""
        ...

    async def dead_letters(
        self, tenant: str, *, limit: int, offset: int = 0
    ) -> tuple[builtins.list[OutboxMessage], int]:
        """Dead messages, newest first, and how many there are in all."""
        ...

    async def replay(self, tenant: str, message_id: str, now: datetime) -> OutboxMessage | None:
        """A dead message made pending again, due ``now``, its attempt count reset; None when
        there is no such dead message."""
        ...

    async def recent(
        self, tenant: str, destination_id: str, *, limit: int
    ) -> builtins.list[OutboxMessage]:
        """The destination's latest messages, newest first."""
        ...

    async def attempts(self, tenant: str, message_id: str) -> builtins.list[DeliveryAttempt]:
        """The message's attempts, oldest first."""
        ...

    async def counts(self, tenant: str, destination_id: str | None = None) -> dict[str, int]:
        """How many messages are in each state (every state named, 0 when none)."""
        ...
