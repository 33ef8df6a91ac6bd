"""Reading profiles, sessions and events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.api.paging import ListOffset
from tessera.errors import NotFound
from tessera.model.common import DEFAULT_TENANT
from tessera.model.event import normalise_event_type

router = APIRouter(tags=["profiles, sessions and events"], dependencies=[Depends(current_user)])

RecordId = Annotated[str, Path(max_length=128)]


@router.get("/profile/{profile_id}")
async def get_profile(profile_id: RecordId, runtime: RuntimeDep) -> Response:
    """The profile with this id, or the one that lists it in ``ids`` (e.g. after a merge)."""
    profile = await runtime.storage.profiles.get(DEFAULT_TENANT, profile_id)
    if profile is None:
        raise NotFound(f"profile {profile_id!r} does not exist")
    return json_response(profile)


@router.get("/profile/{profile_id}/events")
async def get_profile_events(
    profile_id: RecordId,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: ListOffset = 0,
    type: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """The profile's events, newest first, optionally of one type."""
    profile = await runtime.storage.profiles.get(DEFAULT_TENANT, profile_id)
    if profile is None:
        raise NotFound(f"profile {profile_id!r} does not exist")
    page = await runtime.storage.events.for_profiles(
        DEFAULT_TENANT,
        profile.ids or [profile.id],
        event_type=normalise_event_type(type) if type else None,
        limit=limit,
        offset=offset,
    )
    return json_response({"total": page.total, "result": page.items})


@router.get("/session/{session_id}")
async def get_session(session_id: RecordId, runtime: RuntimeDep) -> Response:
    session = await runtime.storage.sessions.get(DEFAULT_TENANT, session_id)
    if session is None:
        raise NotFound(f"session {session_id!r} does not exist")
    return json_response(session)


@router.get("/event/{event_id}")
async def get_event(event_id: RecordId, runtime: RuntimeDep) -> Response:
    event = await runtime.storage.events.get(DEFAULT_TENANT, event_id)
    if event is None:
        raise NotFound(f"event {event_id!r} does not exist")
    return json_response(event)
