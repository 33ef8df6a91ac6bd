"""Event sources: create, read, list, enable/disable, delete; a server source's key."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field, field_validator

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.api.ids import url_safe_id
from tessera.collect.source_keys import new_key
from tessera.errors import InvalidPayload, NotFound
from tessera.model.common import DEFAULT_TENANT, new_id, utcnow
from tessera.model.source import EventSource, SourceTrust

router = APIRouter(tags=["event sources"], dependencies=[Depends(current_user)])

SourceId = Annotated[str, Path(max_length=128)]


class SourceIn(BaseModel):
    id: str | None = Field(None, description="Kept when given (URL-safe, ≤128); else generated")
    name: str = Field(min_length=1, max_length=255)
    type: str = Field(
        "rest",
        min_length=1,
        max_length=64,
        description='The kind of source; Tracardi\'s list form (["rest"]) is read as its one type',
    )
    description: str = Field("", max_length=4096)
    enabled: bool = True
    tags: list[str] = Field(default_factory=list, max_length=64)
    trust: SourceTrust = Field(
        "public",
        description=(
            "public: a browser or an app, whose id anyone can read and send; server: a system of "
            "yours, whose requests prove themselves with the source's key (docs/security.md)"
        ),
    )
    public_merge: bool = Field(
        False,
        description="A public source's identify may merge into a profile holding the identifier",
    )

    @field_validator("id")
    @classmethod
    def _url_safe(cls, value: str | None) -> str | None:
        return url_safe_id(value)

    @field_validator("type", mode="before")
    @classmethod
    def _one_type(cls, value: Any) -> Any:
        """Tracardi keeps a source's type as a list and its clients send one: ["rest"]."""
        if not isinstance(value, list):
            return value
        if len(value) == 1:
            return value[0]
        if value and all(isinstance(item, str) for item in value) and len(set(value)) == 1:
            return value[0]
        raise ValueError("give one type: a string, or a list of one string as Tracardi sends")


class SourcePatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=4096)
    enabled: bool | None = None
    tags: list[str] | None = Field(None, max_length=64)
    trust: SourceTrust | None = None
    public_merge: bool | None = None


def _answer(source: EventSource, *, new_key: str | None = None, status_code: int = 200) -> Response:
    """A source as the API shows it: its key never, except the one just made (shown once)."""
    shown = msgspec.to_builtins(source)
    shown.pop("key", None)
    shown["has_key"] = source.key is not None
    if new_key is not None:
        shown["key"] = new_key
    return json_response(shown, status_code=status_code)


def _keyed(source: EventSource) -> str | None:
    """A server source gets a key when it has none (the new key, to show once); a public
    source keeps none."""
    if not source.trusted:
        source.key = None
        return None
    if source.key is None:
        source.key = new_key()
        return source.key
    return None


async def _existing(runtime: RuntimeDep, source_id: str) -> EventSource:
    source = await runtime.storage.sources.get(DEFAULT_TENANT, source_id)
    if source is None:
        raise NotFound(f"event source {source_id!r} does not exist")
    return source


@router.get("/event-sources")
async def list_sources(runtime: RuntimeDep) -> Response:
    sources = await runtime.storage.sources.list(DEFAULT_TENANT)
    shown = []
    for source in sources:
        item = msgspec.to_builtins(source)
        item.pop("key", None)
        item["has_key"] = source.key is not None
        shown.append(item)
    return json_response({"total": len(shown), "result": shown})


@router.get("/event-source/{source_id}")
async def get_source(source_id: SourceId, runtime: RuntimeDep) -> Response:
    return _answer(await _existing(runtime, source_id))


@router.post("/event-source/{source_id}/key")
async def rotate_key(source_id: SourceId, runtime: RuntimeDep) -> Response:
    """A new key for a server source; the old one stops working at once. The answer is the
    only place the key is ever shown."""
    source = await _existing(runtime, source_id)
    if not source.trusted:
        raise InvalidPayload(
            f"event source {source_id!r} is public: a key would prove nothing (set its trust "
            "to server first)"
        )
    source.key = new_key()
    await runtime.sources.save(source)
    return _answer(source, new_key=source.key)


@router.post("/event-source", status_code=201)
async def save_source(body: SourceIn, runtime: RuntimeDep) -> Response:
    """Create a source, or replace the one with the same id (its creation time is kept)."""
    source_id = body.id or new_id()
    previous = await runtime.storage.sources.get(DEFAULT_TENANT, source_id)
    source = EventSource(
        id=source_id,
        tenant=DEFAULT_TENANT,
        name=body.name,
        type=body.type,
        description=body.description,
        enabled=body.enabled,
        tags=body.tags,
        created=previous.created if previous else utcnow(),
        trust=body.trust,
        key=previous.key if previous else None,
        public_merge=body.public_merge,
    )
    made = _keyed(source)
    await runtime.sources.save(source)
    return _answer(source, new_key=made, status_code=200 if previous else 201)


@router.patch("/event-source/{source_id}")
async def update_source(source_id: SourceId, body: SourcePatch, runtime: RuntimeDep) -> Response:
    """Change some fields, e.g. ``{"enabled": false}`` to stop accepting its events."""
    source = await _existing(runtime, source_id)
    for name, value in body.model_dump(exclude_unset=True, exclude_none=True).items():
        setattr(source, name, value)
    made = _keyed(source)
    await runtime.sources.save(source)
    return _answer(source, new_key=made)


@router.delete("/event-source/{source_id}", status_code=204)
async def delete_source(source_id: SourceId, runtime: RuntimeDep) -> Response:
    if not await runtime.sources.delete(DEFAULT_TENANT, source_id):
        raise NotFound(f"event source {source_id!r} does not exist")
    return Response(status_code=204)
