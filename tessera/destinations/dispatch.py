"""Deciding, on the ingest path, which destinations hear about a request, and what they get.

``plan`` is called with the request's documents before they are committed: it picks the
tenant's enabled destinations that apply and renders each message's body, from a cached list of
destinations (the store is asked once per tenant per ``ttl_s``; ``forget`` drops the cache when
this process changes one). It does no other I/O and never sends anything: the messages are kept
held with the request's records and released by their commit (workflow/held_work.py), so a
message is only sent for data that was stored.

Which destinations apply:

- ``on="event"``: each valid event (``metadata.valid`` not false) whose type is in
  ``event_types`` (empty: any type) and for which the condition holds over
  ``{"event": the event, "profile": …, "session": …}``; one message per event.
- ``on="profile"``: when the request changed the profile and the condition holds over
  ``{"profile": …, "session": …, "event": the request's last event}``; one message per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from tessera.core.loading_cache import LoadingCache
from tessera.core.reshaping import MAPPING_ROOTS, render
from tessera.errors import InvalidPayload
from tessera.model.common import derived_id, utcnow
from tessera.model.destination import Destination, OutboxMessage
from tessera.query import Condition, evaluate, parse
from tessera.storage.automation_ports import DocumentStore
from tessera.storage.write_through import WriteThrough

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActiveDestination:
    """A destination ready for the ingest path: its condition parsed, its types a set."""

    destination: Destination
    event_types: frozenset[str]
    condition: Condition | None


def _target(destination: Destination) -> ActiveDestination | None:
    try:
        condition = parse(destination.condition) if destination.condition else None
    except InvalidPayload as exc:
        # Checked when saved; one stored by an older version that no longer parses is skipped
        # rather than failing every request of the tenant.
        log.warning("destination %s skipped: %s", destination.id, exc.message)
        return None
    return ActiveDestination(destination, frozenset(destination.event_types), condition)


class DestinationDispatcher(WriteThrough[Destination]):
    def __init__(self, store: DocumentStore[Destination], ttl_s: float) -> None:
        self.store = store
        self._targets: LoadingCache[str, list[ActiveDestination]] = LoadingCache(
            self._load, ttl_s=ttl_s
        )

    async def targets(self, tenant: str) -> list[ActiveDestination]:
        """The tenant's enabled destinations, oldest first, from the cache when fresh."""
        return await self._targets.get(tenant)

    async def _load(self, tenant: str) -> list[ActiveDestination]:
        return [
            target
            for destination in await self.store.list(tenant)
            if destination.enabled and (target := _target(destination)) is not None
        ]

    async def active(self, tenant: str) -> bool:
        """Whether the tenant has any enabled destination: when not, the ingest path skips the
        work of preparing documents for ``plan``."""
        return bool(await self.targets(tenant))

    def forget(self, tenant: str) -> None:
        """Called when this process changes a destination: the next request reads the store."""
        self._targets.forget(lambda key: key == tenant)

    async def plan(
        self,
        tenant: str,
        *,
        events: list[dict[str, Any]],
        profile: dict[str, Any] | None,
        session: dict[str, Any] | None,
        profile_changed: bool,
        request: str,
    ) -> list[OutboxMessage]:
        """The messages the request's documents (plain JSON, as ``msgspec.to_builtins``
        gives them) make; nothing is stored or sent yet. Each is named from what it is about
        (the destination and the event, or the request ``request`` for a profile change), so
        a retry of the request plans the same messages, not new ones."""
        targets = await self.targets(tenant)
        if not targets:
            return []
        now = utcnow()
        profile_doc = profile or {}
        session_doc = session or {}
        profile_id = profile.get("id") if profile else None
        messages: list[OutboxMessage] = []
        for target in targets:
            destination = target.destination
            if destination.on == "event":
                for event in events:
                    if not _wanted(target, event):
                        continue
                    scope = {"event": event, "profile": profile_doc, "session": session_doc}
                    if target.condition is not None and not evaluate(target.condition, scope):
                        continue
                    body = _body(destination, scope, {"event": event, "profile": profile})
                    event_id = event.get("id")
                    name = derived_id(destination.id, "event", str(event_id))
                    messages.append(_message(destination, name, body, now, event_id, profile_id))
            elif profile_changed and profile is not None:
                last_event = events[-1] if events else {}
                scope = {"event": last_event, "profile": profile_doc, "session": session_doc}
                if target.condition is not None and not evaluate(target.condition, scope):
                    continue
                body = _body(destination, scope, {"profile": profile})
                name = derived_id(destination.id, "profile", request)
                messages.append(
                    _message(destination, name, body, now, last_event.get("id"), profile_id)
                )
        return messages


def _wanted(target: ActiveDestination, event: dict[str, Any]) -> bool:
    if (event.get("metadata") or {}).get("valid") is False:
        return False
    return not target.event_types or event.get("type") in target.event_types


def _body(destination: Destination, scope: dict[str, Any], default: dict[str, Any]) -> Any:
    if destination.template is None:
        # A private, plain-JSON copy: the ingest path's documents may change after this.
        return msgspec.to_builtins(default)
    warnings: list[str] = []
    body = render(destination.template, scope, warnings, "template", MAPPING_ROOTS)
    for warning in warnings:
        log.warning("destination %s: %s", destination.id, warning)
    return body


def _message(
    destination: Destination,
    message_id: str,
    body: Any,
    now: datetime,
    event_id: Any,
    profile_id: Any,
) -> OutboxMessage:
    return OutboxMessage(
        tenant=destination.tenant,
        id=message_id,
        destination_id=destination.id,
        created=now,
        due=now,
        body=body,
        event_id=event_id if isinstance(event_id, str) else None,
        profile_id=profile_id if isinstance(profile_id, str) else None,
    )
