"""Rules over HTTP: which events run which workflow.

- ``POST /rule``: create, or replace the one with the same id (201 / 200)
- ``GET /rules?event_type=``, ``GET|PATCH|DELETE /rule/{id}``
- ``POST /rule/{id}/enable`` and ``/disable``

A rule is checked before it is stored: its workflow must exist, its condition must parse, its
event type is normalised. Every change applies to collection at once (the rule cache of this
process is dropped; other processes see it within ``TESSERA_WORKFLOW_CACHE_SECONDS``).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field, field_validator

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.api.ids import url_safe_id
from tessera.errors import InvalidPayload, NotFound
from tessera.model.common import DEFAULT_TENANT, new_id, utcnow
from tessera.model.event import checked_event_type, normalise_event_type
from tessera.model.workflow import Rule
from tessera.query import parse
from tessera.runtime import Runtime

router = APIRouter(tags=["rules"], dependencies=[Depends(current_user)])

RuleId = Annotated[str, Path(max_length=128)]


class _RuleFields(BaseModel):
    @field_validator("segment", "workflow_id", "source_id", check_fields=False)
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        return url_safe_id(value)


class RuleIn(_RuleFields):
    id: str | None = Field(None, description="Kept when given (URL-safe, ≤128); else generated")
    name: str = Field(min_length=1, max_length=255)
    description: str = Field("", max_length=10_000)
    event_type: str = Field(min_length=1, max_length=255, description="Normalised when stored")
    workflow_id: str = Field(min_length=1, max_length=128)
    source_id: str | None = Field(None, max_length=128, description="None: every source")
    segment: str | None = Field(None, max_length=128, description="Only profiles in it")
    condition: str | None = Field(None, max_length=10_000, description="Condition language")
    required_consents: list[str] = Field(default_factory=list, max_length=50)
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return url_safe_id(value)


class RulePatch(_RuleFields):
    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=10_000)
    event_type: str | None = Field(None, min_length=1, max_length=255)
    workflow_id: str | None = Field(None, min_length=1, max_length=128)
    source_id: str | None = Field(None, max_length=128)
    segment: str | None = Field(None, max_length=128)
    condition: str | None = Field(None, max_length=10_000)
    required_consents: list[str] | None = Field(None, max_length=50)
    enabled: bool | None = None


# Where null means something ("every source", "any segment", "always").
_NULLABLE = frozenset({"source_id", "segment", "condition"})


async def _checked(runtime: Runtime, document: dict[str, Any]) -> Rule:
    document["event_type"] = checked_event_type(document["event_type"], "event_type")
    if document.get("condition") is not None:
        parse(document["condition"])
    if await runtime.storage.workflows.get(DEFAULT_TENANT, document["workflow_id"]) is None:
        raise InvalidPayload(f"workflow_id: there is no workflow {document['workflow_id']!r}")
    return msgspec.convert(document, Rule)


async def _stored(runtime: Runtime, rule_id: str) -> Rule:
    rule = await runtime.storage.rules.get(DEFAULT_TENANT, rule_id)
    if rule is None:
        raise NotFound(f"rule {rule_id!r} does not exist")
    return rule


async def _save(runtime: Runtime, rule: Rule, status_code: int = 200) -> Response:
    await runtime.automation.rules.save(rule)
    return json_response(rule, status_code=status_code)


@router.post("/rule", status_code=201)
async def save_rule(body: RuleIn, runtime: RuntimeDep) -> Response:
    """Run a workflow for every event of a type (from a source, for a segment, when a
    condition holds, with the consents it needs)."""
    rule_id = body.id or new_id()
    previous = await runtime.storage.rules.get(DEFAULT_TENANT, rule_id)
    document = body.model_dump()
    document.update(
        tenant=DEFAULT_TENANT, id=rule_id, created=previous.created if previous else utcnow()
    )
    rule = await _checked(runtime, document)
    return await _save(runtime, rule, status_code=200 if previous else 201)


@router.get("/rules")
async def list_rules(
    runtime: RuntimeDep, event_type: Annotated[str | None, Query(max_length=255)] = None
) -> Response:
    rules = await runtime.storage.rules.list(DEFAULT_TENANT)
    if event_type is not None:
        wanted = normalise_event_type(event_type)
        rules = [rule for rule in rules if rule.event_type == wanted]
    return json_response({"total": len(rules), "result": rules})


@router.get("/rule/{rule_id}")
async def get_rule(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return json_response(await _stored(runtime, rule_id))


@router.patch("/rule/{rule_id}")
async def update_rule(rule_id: RuleId, body: RulePatch, runtime: RuntimeDep) -> Response:
    rule = await _stored(runtime, rule_id)
    changes = {
        name: value
        for name, value in body.model_dump(exclude_unset=True).items()
        if value is not None or name in _NULLABLE
    }
    document: dict[str, Any] = msgspec.to_builtins(rule)
    document.update(changes)
    return await _save(runtime, await _checked(runtime, document))


@router.delete("/rule/{rule_id}", status_code=204)
async def delete_rule(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    if not await runtime.automation.rules.delete(DEFAULT_TENANT, rule_id):
        raise NotFound(f"rule {rule_id!r} does not exist")
    return Response(status_code=204)


@router.post("/rule/{rule_id}/enable")
async def enable_rule(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    return await _save(
        runtime, msgspec.structs.replace(await _stored(runtime, rule_id), enabled=True)
    )


@router.post("/rule/{rule_id}/disable")
async def disable_rule(rule_id: RuleId, runtime: RuntimeDep) -> Response:
    rule = await _stored(runtime, rule_id)
    return await _save(runtime, msgspec.structs.replace(rule, enabled=False))
