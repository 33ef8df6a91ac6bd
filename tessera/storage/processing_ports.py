"""The storage port for event processing rules (validation, reshaping, mapping).

Kept apart from ports.py so that the processing feature can be added without touching it; it is
a port all the same: nothing outside ``storage/`` knows which backend implements it.

A rule kind is named by its class (``ValidationRule``, ``ReshapeRule``, ``MappingRule``), so
``get(tenant, MappingRule, id)`` is typed ``MappingRule | None``. Ids are unique per tenant and
kind. Event types are compared exactly; callers store and ask for normalised ones.
"""

from __future__ import annotations

import builtins
from typing import Protocol, TypeVar

from tessera.model.processing import MappingRule, ProcessingRule, ReshapeRule, ValidationRule

R = TypeVar("R", ValidationRule, ReshapeRule, MappingRule)


class ProcessingRuleStore(Protocol):
    async def get(self, tenant: str, kind: type[R], rule_id: str) -> R | None: ...

    async def save(self, rule: ProcessingRule) -> None:
        """Create the rule, or replace the one of the same kind with the same id."""
        ...

    async def delete(self, tenant: str, kind: type[ProcessingRule], rule_id: str) -> bool: ...

    async def for_event_type(self, tenant: str, event_type: str) -> builtins.list[ProcessingRule]:
        """Every enabled rule of every kind for this event type, oldest first: what the
        processing of one event type needs, in one query."""
        ...

    async def list(
        self, tenant: str, kind: type[R], *, event_type: str | None = None
    ) -> builtins.list[R]:
        """Rules of one kind, enabled or not, oldest first; only one event type's if given."""
        ...
