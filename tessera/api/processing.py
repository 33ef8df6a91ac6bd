"""Event processing configuration: validation, reshaping and mapping rules, built-in types.

Each kind has the same endpoints (shown for mapping):

- ``POST /event-mapping``: create, or replace the rule with the same id (201 / 200)
- ``GET /event-mappings?event_type=``: list, oldest first
- ``GET|PATCH|DELETE /event-mapping/{id}``
- ``POST /event-mapping/{id}/enable`` and ``/disable``

Every rule is checked before it is stored (a schema that does not compile, a template that is
refused, a profile path that may not be written: 422 naming the problem), and every change is
applied to collection at once: rules are saved through ``runtime.processing``, which forgets
its cache.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field, field_validator

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.api.ids import url_safe_id
from tessera.core.patterns import off_the_loop
from tessera.errors import InvalidPayload, NotFound
from tessera.model.common import DEFAULT_TENANT, new_id, utcnow
from tessera.model.event import checked_event_type
from tessera.model.processing import (
    MappingOp,
    MappingRule,
    ProcessingRule,
    ReshapeRule,
    ValidationRule,
)
from tessera.pipeline.builtin_events import BUILTIN_EVENT_TYPES
from tessera.pipeline.processing import check_rule
from tessera.runtime import Runtime
from tessera.storage.processing_ports import R

router = APIRouter(tags=["event processing"], dependencies=[Depends(current_user)])

RuleId = Annotated[str, Path(max_length=128)]
EventTypeQuery = Annotated[str | None, Query(max_length=255)]

_NAMES = {ValidationRule: "validation rule", ReshapeRule: "reshaping rule", MappingRule: "mapping"}


class _RuleIn(BaseModel):
    id: str | None = Field(None, description="Kept when given (URL-safe, ≤128); else generated")
    name: str = Field(min_length=1, max_length=255)
    event_type: str = Field(min_length=1, max_length=255, description="Normalised when stored")
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _url_safe(cls, value: str | None) -> str | None:
        return url_safe_id(value)


class ValidationIn(_RuleIn):
    source_id: str | None = Field(None, max_length=128, description="None: every source")
    json_schema: dict[str, Any] = Field(description="A JSON Schema for the whole event document")


class ReshapeIn(_RuleIn):
    source_id: str | None = Field(None, max_length=128, description="None: every source")
    properties: dict[str, Any] | None = Field(
        None, description="Replaces the event's properties; '{{ event.properties.x }}' templates"
    )
    context: dict[str, Any] | None = Field(None, description="Replaces the event's context")


class FieldMappingIn(BaseModel):
    profile: str = Field(min_length=1, max_length=512, description="e.g. data.contact.email.main")
    op: MappingOp = "equals"
    event: str | list[str] | None = Field(
        None, description="Path in the event, e.g. properties.email; a list: first present"
    )
    value: Any = Field(None, description="Constant or template used when 'event' gives none")


class MappingIn(_RuleIn):
    condition: str | None = Field(None, max_length=10_000, description="Condition language")
    mappings: list[FieldMappingIn] = Field(min_length=1, max_length=200)


class _PatchIn(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=255)
    event_type: str | None = Field(None, min_length=1, max_length=255)
    enabled: bool | None = None


class ValidationPatch(_PatchIn):
    source_id: str | None = Field(None, max_length=128)
    json_schema: dict[str, Any] | None = None


class ReshapePatch(_PatchIn):
    source_id: str | None = Field(None, max_length=128)
    properties: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


class MappingPatch(_PatchIn):
    condition: str | None = Field(None, max_length=10_000)
    mappings: list[FieldMappingIn] | None = Field(None, min_length=1, max_length=200)


# Fields where null means something ("every source", "leave as is", "always"); for the others
# a null in a PATCH means "unchanged", as for event sources.
_NULLABLE = frozenset({"source_id", "properties", "context", "condition"})


async def _build(kind: type[R], document: dict[str, Any]) -> R:
    document["event_type"] = checked_event_type(document["event_type"], "event_type")
    try:
        rule = msgspec.convert(document, kind)
    except msgspec.ValidationError as exc:
        raise InvalidPayload(str(exc)) from exc
    # Off the event loop, within a time limit: a validation rule compiles user patterns.
    await off_the_loop(check_rule, rule)
    return rule


async def _stored(runtime: Runtime, kind: type[R], rule_id: str) -> R:
    rule = await runtime.processing.store.get(DEFAULT_TENANT, kind, rule_id)
    if rule is None:
        raise NotFound(f"{_NAMES[kind]} {rule_id!r} does not exist")
    return rule


async def _store(runtime: Runtime, rule: ProcessingRule, status_code: int = 200) -> Response:
    await runtime.processing.save(rule)
    return json_response(rule, status_code=status_code)


async def _create(runtime: Runtime, kind: type[R], body: _RuleIn) -> Response:
    """Create, or replace the rule with the same id: its creation time is kept and its
    version grows."""
    rule_id = body.id or new_id()
    previous = await runtime.processing.store.get(DEFAULT_TENANT, kind, rule_id)
    document = body.model_dump()
    document.update(
        tenant=DEFAULT_TENANT,
        id=rule_id,
        created=previous.created if previous else utcnow(),
        version=previous.version + 1 if previous else 1,
    )
    rule = await _build(kind, document)
    return await _store(runtime, rule, status_code=200 if previous else 201)


async def _patch(runtime: Runtime, kind: type[R], rule_id: str, body: _PatchIn) -> Response:
    rule = await _stored(runtime, kind, rule_id)
    changes = {
        name: value
        for name, value in body.model_dump(exclude_unset=True).items()
        if value is not None or name in _NULLABLE
    }
    document: dict[str, Any] = msgspec.to_builtins(rule)
    document.update(changes, version=rule.version + 1)
    return await _store(runtime, await _build(kind, document))


async def _enable(runtime: Runtime, kind: type[R], rule_id: str, enabled: bool) -> Response:
    rule = await _stored(runtime, kind, rule_id)
    if rule.enabled == enabled:
        return json_response(rule)
    return await _store(
        runtime, msgspec.structs.replace(rule, enabled=enabled, version=rule.version + 1)
    )


async def _list(runtime: Runtime, kind: type[R], event_type: str | None) -> Response:
    rules = await runtime.processing.store.list(
        DEFAULT_TENANT,
        kind,
        event_type=checked_event_type(event_type, "event_type") if event_type else None,
    )
    return json_response({"total": len(rules), "result": rules})


async def _delete(runtime: Runtime, kind: type[R], rule_id: str) -> Response:
    if not await runtime.processing.delete(DEFAULT_TENANT, kind, rule_id):
        raise NotFound(f"{_NAMES[kind]} {rule_id!r} does not exist")
    return Response(status_code=204)


# --- Validation ------------------------------------------------------------------------------


@router.post("/event-validation", status_code=201)
async def save_validation(body: ValidationIn, runtime: RuntimeDep) -> Response:
    """A JSON Schema events of a type must satisfy; refused (422) when it does not compile."""
    return await _create(runtime, ValidationRule, body)


@router.get("/event-validations")
async def list_validations(runtime: RuntimeDep, event_type: EventTypeQuery = None) -> Response:
    return await _list(runtime, ValidationRule, event_type)


@router.get("/event-validation/{rule_id}")
async def get_validation(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return json_response(await _stored(runtime, ValidationRule, rule_id))


@router.patch("/event-validation/{rule_id}")
async def update_validation(
    rule_id: RuleId, body: ValidationPatch, runtime: RuntimeDep
) -> Response:
    return await _patch(runtime, ValidationRule, rule_id, body)


@router.delete("/event-validation/{rule_id}", status_code=204)
async def delete_validation(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return await _delete(runtime, ValidationRule, rule_id)


@router.post("/event-validation/{rule_id}/enable")
async def enable_validation(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return await _enable(runtime, ValidationRule, rule_id, True)


@router.post("/event-validation/{rule_id}/disable")
async def disable_validation(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return await _enable(runtime, ValidationRule, rule_id, False)


# --- Reshaping -------------------------------------------------------------------------------


@router.post("/event-reshaping", status_code=201)
async def save_reshaping(body: ReshapeIn, runtime: RuntimeDep) -> Response:
    """Templates that replace an event's properties and/or context before it is mapped."""
    return await _create(runtime, ReshapeRule, body)


@router.get("/event-reshapings")
async def list_reshapings(runtime: RuntimeDep, event_type: EventTypeQuery = None) -> Response:
    return await _list(runtime, ReshapeRule, event_type)


@router.get("/event-reshaping/{rule_id}")
async def get_reshaping(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return json_response(await _stored(runtime, ReshapeRule, rule_id))


@router.patch("/event-reshaping/{rule_id}")
async def update_reshaping(rule_id: RuleId, body: ReshapePatch, runtime: RuntimeDep) -> Response:
    return await _patch(runtime, ReshapeRule, rule_id, body)


@router.delete("/event-reshaping/{rule_id}", status_code=204)
async def delete_reshaping(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return await _delete(runtime, ReshapeRule, rule_id)


@router.post("/event-reshaping/{rule_id}/enable")
async def enable_reshaping(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return await _enable(runtime, ReshapeRule, rule_id, True)


@router.post("/event-reshaping/{rule_id}/disable")
async def disable_reshaping(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return await _enable(runtime, ReshapeRule, rule_id, False)


# --- Mapping ---------------------------------------------------------------------------------


@router.post("/event-mapping", status_code=201)
async def save_mapping(body: MappingIn, runtime: RuntimeDep) -> Response:
    """Event values copied onto the profile; runs after the type's built-in mapping."""
    return await _create(runtime, MappingRule, body)


@router.get("/event-mappings")
async def list_mappings(runtime: RuntimeDep, event_type: EventTypeQuery = None) -> Response:
    return await _list(runtime, MappingRule, event_type)


@router.get("/event-mapping/{rule_id}")
async def get_mapping(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return json_response(await _stored(runtime, MappingRule, rule_id))


@router.patch("/event-mapping/{rule_id}")
async def update_mapping(rule_id: RuleId, body: MappingPatch, runtime: RuntimeDep) -> Response:
    return await _patch(runtime, MappingRule, rule_id, body)


@router.delete("/event-mapping/{rule_id}", status_code=204)
async def delete_mapping(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return await _delete(runtime, MappingRule, rule_id)


@router.post("/event-mapping/{rule_id}/enable")
async def enable_mapping(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return await _enable(runtime, MappingRule, rule_id, True)


@router.post("/event-mapping/{rule_id}/disable")
async def disable_mapping(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return await _enable(runtime, MappingRule, rule_id, False)


# --- Built-in event types --------------------------------------------------------------------


@router.get("/event-types/builtin")
async def list_builtin_event_types() -> Response:
    """Event types mapped onto the profile without configuration, and their mappings."""
    return json_response({"total": len(BUILTIN_EVENT_TYPES), "result": BUILTIN_EVENT_TYPES})
