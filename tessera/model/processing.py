"""Event processing configuration: how events are validated, reshaped and mapped onto profiles.

Three kinds of rule, each for one event type (types are stored normalised, as events are):

- ``ValidationRule``: a JSON Schema the whole event document must satisfy.
- ``ReshapeRule``: templates that replace an event's ``properties`` and/or ``context``.
- ``MappingRule``: copies values from the event onto the profile (``FieldMapping``).

``version`` grows by one on every change, so anything compiled from a rule (a schema validator)
can be cached under ``(tenant, id, version)`` and never outlive the rule it came from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

import msgspec

MappingOp = Literal["equals", "equals_if_not_exists", "append", "increment", "delete", "merge"]
MAPPING_OPS: tuple[MappingOp, ...] = (
    "equals",
    "equals_if_not_exists",
    "append",
    "increment",
    "delete",
    "merge",
)


class ValidationRule(msgspec.Struct, kw_only=True):
    kind: ClassVar[str] = "validation"

    tenant: str
    id: str
    name: str
    event_type: str
    json_schema: dict[str, Any]
    created: datetime
    # None: the rule applies to events from every source.
    source_id: str | None = None
    enabled: bool = True
    version: int = 1


class ReshapeRule(msgspec.Struct, kw_only=True):
    kind: ClassVar[str] = "reshaping"

    tenant: str
    id: str
    name: str
    event_type: str
    created: datetime
    source_id: str | None = None
    # None leaves that part of the event as it came; a dict replaces it entirely.
    properties: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    enabled: bool = True
    version: int = 1


class FieldMapping(msgspec.Struct, kw_only=True):
    """One value copied from an event onto its profile.

    ``event`` names where the value comes from (``properties.email``); a list names
    alternatives, the first one present wins. When none is present, ``value`` (a constant, or a
    template like those of reshaping) is used instead. ``profile`` names where it goes; a
    ``{event.path}`` segment in it is filled from the event (``consents.{properties.type}``).
    """

    profile: str
    op: MappingOp = "equals"
    event: str | list[str] | None = None
    value: Any = None


class MappingRule(msgspec.Struct, kw_only=True):
    kind: ClassVar[str] = "mapping"

    tenant: str
    id: str
    name: str
    event_type: str
    created: datetime
    mappings: list[FieldMapping] = msgspec.field(default_factory=list)
    # A condition in Tessera's condition language over event, profile and session; None: always.
    condition: str | None = None
    enabled: bool = True
    version: int = 1


ProcessingRule = ValidationRule | ReshapeRule | MappingRule
RULE_KINDS: dict[str, type[ValidationRule] | type[ReshapeRule] | type[MappingRule]] = {
    ValidationRule.kind: ValidationRule,
    ReshapeRule.kind: ReshapeRule,
    MappingRule.kind: MappingRule,
}
