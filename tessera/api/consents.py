"""Consent types: create, read, list, replace, delete."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field, field_validator

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.errors import NotFound
from tessera.model.common import DEFAULT_TENANT, utcnow
from tessera.model.consent import ConsentType

router = APIRouter(tags=["consents"], dependencies=[Depends(current_user)])

# Consent ids are keys under profile.consents and appear in conditions: keep them simple.
_CONSENT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ConsentTypeIn(BaseModel):
    id: str = Field(description="Key under profile.consents, e.g. `marketing-email`")
    name: str = Field(min_length=1, max_length=255)
    description: str = Field("", max_length=4096)
    revokable: bool = True
    default: Literal["grant", "deny"] = "deny"
    required: bool = False
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _simple_id(cls, value: str) -> str:
        if not _CONSENT_ID.match(value):
            raise ValueError("must be 1-64 of a-z, 0-9, '_' or '-', starting with a letter/digit")
        return value


@router.get("/consent-types")
async def list_consent_types(runtime: RuntimeDep) -> Response:
    found = await runtime.storage.consent_types.list(DEFAULT_TENANT)
    return json_response({"total": len(found), "result": found})


@router.get("/consent-type/{consent_id}")
async def get_consent_type(
    consent_id: Annotated[str, Path(max_length=64)], runtime: RuntimeDep
) -> Response:
    found = await runtime.storage.consent_types.get(DEFAULT_TENANT, consent_id)
    if found is None:
        raise NotFound(f"consent type {consent_id!r} does not exist")
    return json_response(found)


@router.post("/consent-type", status_code=201)
async def save_consent_type(body: ConsentTypeIn, runtime: RuntimeDep) -> Response:
    previous = await runtime.storage.consent_types.get(DEFAULT_TENANT, body.id)
    consent = ConsentType(
        tenant=DEFAULT_TENANT,
        created=previous.created if previous else utcnow(),
        **body.model_dump(),
    )
    await runtime.consent_rules.save(consent)
    return json_response(consent, status_code=200 if previous else 201)


@router.delete("/consent-type/{consent_id}", status_code=204)
async def delete_consent_type(
    consent_id: Annotated[str, Path(max_length=64)], runtime: RuntimeDep
) -> Response:
    if not await runtime.consent_rules.delete(DEFAULT_TENANT, consent_id):
        raise NotFound(f"consent type {consent_id!r} does not exist")
    return Response(status_code=204)
