"""Changing one person's profile: unmerge, delete, anonymize, export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.model.common import DEFAULT_TENANT

router = APIRouter(tags=["profiles, sessions and events"], dependencies=[Depends(current_user)])

RecordId = Annotated[str, Path(max_length=128)]


class UnmergeRequest(BaseModel):
    ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=100, description="Ids of profiles merged into this one"
    )


@router.post("/profile/{profile_id}/unmerge")
async def unmerge_profile(
    profile_id: RecordId, body: UnmergeRequest, runtime: RuntimeDep
) -> Response:
    """Split former profiles back out, with their events, sessions and values."""
    result = await runtime.profile_operations.unmerge(DEFAULT_TENANT, profile_id, body.ids)
    return json_response(result)


@router.delete("/profile/{profile_id}")
async def delete_profile(
    profile_id: RecordId,
    runtime: RuntimeDep,
    with_data: Annotated[bool, Query(description="Also delete its sessions and events")] = False,
) -> Response:
    """Delete the profile and every id that resolved to it (right to erasure)."""
    result = await runtime.profile_operations.erase(DEFAULT_TENANT, profile_id, with_data=with_data)
    return json_response(result)


@router.post("/profile/{profile_id}/anonymize")
async def anonymize_profile(profile_id: RecordId, runtime: RuntimeDep) -> Response:
    """Remove traits, data and identity values; keep anonymous statistics."""
    return json_response(await runtime.profile_operations.anonymize(DEFAULT_TENANT, profile_id))


@router.get("/profile/{profile_id}/export")
async def export_profile(profile_id: RecordId, runtime: RuntimeDep) -> Response:
    """Everything held about the person: profile, merged profiles, sessions, events."""
    return json_response(await runtime.profile_operations.export(DEFAULT_TENANT, profile_id))
