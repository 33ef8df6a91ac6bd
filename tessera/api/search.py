"""Searching profiles and events with the condition language."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.errors import InvalidPayload
from tessera.model.common import DEFAULT_TENANT
from tessera.query import MAX_TEXT_LENGTH, parse
from tessera.query.ast import iter_fields
from tessera.settings import Settings
from tessera.storage.search import Cursor, SearchRequest, parse_sort

router = APIRouter(tags=["search"], dependencies=[Depends(current_user)])


class SearchBody(BaseModel):
    where: str | None = Field(
        None,
        max_length=MAX_TEXT_LENGTH,
        description="A condition, e.g. `profile@traits.plan == 'pro' AND profile@stats.visits > 2`",
    )
    limit: int = Field(20, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=100_000)
    cursor: str | None = Field(
        None, max_length=512, description="`next_cursor` of the previous page (default order)"
    )
    sort: str | None = Field(
        None, max_length=256, description="A field, e.g. `profile@stats.visits`"
    )
    order: Literal["asc", "desc"] = "desc"


def _request(body: SearchBody, entity: str, settings: Settings) -> SearchRequest:
    """The store's request: the condition within TESSERA_MAX_CONDITION_SIZE (422 past it), the
    search within TESSERA_SEARCH_TIMEOUT_SECONDS (503 past it)."""
    if body.cursor is not None and body.offset:
        raise InvalidPayload("offset: use either offset or cursor, not both")
    condition = parse(body.where) if body.where and body.where.strip() else None
    if condition is not None:
        size = sum(1 for _field in iter_fields(condition))
        if size > settings.max_condition_size:
            raise InvalidPayload(
                f"where: {size} comparisons, more than {settings.max_condition_size} "
                "(TESSERA_MAX_CONDITION_SIZE)"
            )
    return SearchRequest(
        condition=condition,
        limit=body.limit,
        offset=body.offset,
        sort=parse_sort(entity, body.sort, body.order),
        cursor=Cursor.decode(body.cursor) if body.cursor else None,
        timeout_s=settings.search_timeout_seconds,
    )


@router.post("/profiles/search")
async def search_profiles(body: SearchBody, runtime: RuntimeDep) -> Response:
    """Profiles matching `where`, newest change first unless `sort` says otherwise."""
    request = _request(body, "profile", runtime.settings)
    page = await runtime.storage.profiles.search(DEFAULT_TENANT, request)
    return json_response(
        {"total": page.total, "result": page.items, "next_cursor": page.next_cursor}
    )


@router.post("/events/search")
async def search_events(body: SearchBody, runtime: RuntimeDep) -> Response:
    """Events matching `where`, newest first unless `sort` says otherwise."""
    request = _request(body, "event", runtime.settings)
    page = await runtime.storage.events.search(DEFAULT_TENANT, request)
    return json_response(
        {"total": page.total, "result": page.items, "next_cursor": page.next_cursor}
    )
