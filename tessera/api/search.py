"""Searching profiles and events with the condition language."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.errors import InvalidPayload
from tessera.model.common import DEFAULT_TENANT
from tessera.query import MAX_TEXT_LENGTH, parse
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


def _request(body: SearchBody, entity: str) -> SearchRequest:
    if body.cursor is not None and body.offset:
        raise InvalidPayload("offset: use either offset or cursor, not both")
    condition = parse(body.where) if body.where and body.where.strip() else None
    return SearchRequest(
        condition=condition,
        limit=body.limit,
        offset=body.offset,
        sort=parse_sort(entity, body.sort, body.order),
        cursor=Cursor.decode(body.cursor) if body.cursor else None,
    )


@router.post("/profiles/search")
async def search_profiles(body: SearchBody, runtime: RuntimeDep) -> Response:
    """Profiles matching `where`, newest change first unless `sort` says otherwise."""
    page = await runtime.storage.profiles.search(DEFAULT_TENANT, _request(body, "profile"))
    return json_response(
        {"total": page.total, "result": page.items, "next_cursor": page.next_cursor}
    )


@router.post("/events/search")
async def search_events(body: SearchBody, runtime: RuntimeDep) -> Response:
    """Events matching `where`, newest first unless `sort` says otherwise."""
    page = await runtime.storage.events.search(DEFAULT_TENANT, _request(body, "event"))
    return json_response(
        {"total": page.total, "result": page.items, "next_cursor": page.next_cursor}
    )
