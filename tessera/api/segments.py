"""Segments over HTTP, and the re-segmentation jobs their changes start.

- ``POST /segment``: create, or replace the segment with the same id (201 / 200)
- ``GET /segments``: list, oldest first
- ``GET|PATCH|DELETE /segment/{id}``
- ``POST /segment/{id}/enable`` and ``/disable``
- ``POST /segment/{id}/resegment``; ``POST /segments/resegment`` (every segment)
- ``GET /segment-jobs`` (newest first) and ``GET /segment-jobs/{job_id}``: progress

Every change that can alter membership (create, edit, enable, disable, delete) starts a
re-segmentation job over all profiles and answers it as ``job``; live segmentation sees the
change at once (segments are saved through ``runtime.segments``, which forgets its cache). A
condition is checked before it is stored: it must parse (422 naming the line and column) and
read ``profile@`` fields only (422).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field, field_validator

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.api.ids import url_safe_id
from tessera.errors import InvalidPayload, NotFound
from tessera.model.common import DEFAULT_TENANT, new_id, utcnow
from tessera.model.event import checked_event_type
from tessera.model.segment import Segment
from tessera.query import parse
from tessera.query.ast import iter_fields
from tessera.runtime import Runtime
from tessera.segments.job import Job

router = APIRouter(tags=["segments"], dependencies=[Depends(current_user)])

SegmentId = Annotated[str, Path(max_length=128)]
JobId = Annotated[str, Path(max_length=64)]


class SegmentIn(BaseModel):
    id: str | None = Field(None, description="Kept when given (URL-safe, ≤128); else generated")
    name: str = Field(min_length=1, max_length=255)
    condition: str = Field(
        min_length=1, max_length=10_000, description="Condition language over profile@ fields"
    )
    event_types: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Evaluated live only for requests with one of these types; empty: always",
    )
    enabled: bool = True
    description: str = Field("", max_length=2_000)

    @field_validator("id")
    @classmethod
    def _url_safe(cls, value: str | None) -> str | None:
        return url_safe_id(value)


class SegmentPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=255)
    condition: str | None = Field(None, min_length=1, max_length=10_000)
    event_types: list[str] | None = Field(None, max_length=100)
    enabled: bool | None = None
    description: str | None = Field(None, max_length=2_000)


def check_condition(text: str) -> None:
    """Raise InvalidPayload (422) unless the condition parses and reads profile fields only."""
    condition = parse(text)  # QuerySyntaxError (an InvalidPayload) names line and column
    for field in iter_fields(condition):
        if field.entity != "profile":
            raise InvalidPayload(
                f"condition: a segment reads profile@ fields only; {field} is not one"
            )


def _event_types(raw: list[str]) -> list[str]:
    types: list[str] = []
    for item in raw:
        event_type = checked_event_type(item, f"event_types: {item!r}")
        if event_type not in types:
            types.append(event_type)
    return types


def _build(document: dict[str, Any]) -> Segment:
    check_condition(document["condition"])
    document["event_types"] = _event_types(document["event_types"])
    try:
        return msgspec.convert(document, Segment)
    except msgspec.ValidationError as exc:
        raise InvalidPayload(str(exc)) from exc


async def _stored(runtime: Runtime, segment_id: str) -> Segment:
    segment = await runtime.segments.store.get(DEFAULT_TENANT, segment_id)
    if segment is None:
        raise NotFound(f"segment {segment_id!r} does not exist")
    return segment


async def _store(runtime: Runtime, segment: Segment, status_code: int = 200) -> Response:
    """Save, apply to live segmentation at once, and re-segment every profile."""
    await runtime.segments.save(segment)
    job = runtime.segment_jobs.start(segment.tenant, segment.id, name=segment.name)
    return _with_job(segment, job, status_code)


def _with_job(segment: Segment, job: Job | None, status_code: int = 200) -> Response:
    document: dict[str, Any] = msgspec.to_builtins(segment)
    document["job"] = job
    return json_response(document, status_code=status_code)


@router.post("/segment", status_code=201)
async def save_segment(body: SegmentIn, runtime: RuntimeDep) -> Response:
    """Create, or replace the segment with the same id (its creation time is kept and its
    version grows); starts a re-segmentation job, answered as ``job``."""
    segment_id = body.id or new_id()
    previous = await runtime.segments.store.get(DEFAULT_TENANT, segment_id)
    document = body.model_dump()
    document.update(
        tenant=DEFAULT_TENANT,
        id=segment_id,
        created=previous.created if previous else utcnow(),
        version=previous.version + 1 if previous else 1,
    )
    return await _store(runtime, _build(document), status_code=200 if previous else 201)


@router.get("/segments")
async def list_segments(runtime: RuntimeDep) -> Response:
    segments = await runtime.segments.store.list(DEFAULT_TENANT)
    return json_response({"total": len(segments), "result": segments})


@router.get("/segment/{segment_id}")
async def get_segment(segment_id: SegmentId, runtime: RuntimeDep) -> Response:
    return json_response(await _stored(runtime, segment_id))


@router.patch("/segment/{segment_id}")
async def update_segment(
    segment_id: SegmentId, body: SegmentPatch, runtime: RuntimeDep
) -> Response:
    """Change some fields (a null means unchanged); starts a re-segmentation job."""
    segment = await _stored(runtime, segment_id)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    document: dict[str, Any] = msgspec.to_builtins(segment)
    document.update(changes, version=segment.version + 1)
    return await _store(runtime, _build(document))


@router.delete("/segment/{segment_id}")
async def delete_segment(segment_id: SegmentId, runtime: RuntimeDep) -> Response:
    """Delete the segment; a job takes its id off every profile (answered as ``job``)."""
    segment = await _stored(runtime, segment_id)
    if not await runtime.segments.delete(DEFAULT_TENANT, segment_id):
        raise NotFound(f"segment {segment_id!r} does not exist")
    job = runtime.segment_jobs.start(DEFAULT_TENANT, segment_id, name=segment.name)
    return json_response({"id": segment_id, "deleted": True, "job": job})


async def _enable(runtime: Runtime, segment_id: str, enabled: bool) -> Response:
    segment = await _stored(runtime, segment_id)
    if segment.enabled == enabled:
        return _with_job(segment, None)
    changed = msgspec.structs.replace(segment, enabled=enabled, version=segment.version + 1)
    return await _store(runtime, changed)


@router.post("/segment/{segment_id}/enable")
async def enable_segment(segment_id: SegmentId, runtime: RuntimeDep) -> Response:
    """Enable; the job puts the segment's id on the profiles that match (``job`` is null when
    it was enabled already)."""
    return await _enable(runtime, segment_id, True)


@router.post("/segment/{segment_id}/disable")
async def disable_segment(segment_id: SegmentId, runtime: RuntimeDep) -> Response:
    """Disable; the job takes the segment's id off every profile."""
    return await _enable(runtime, segment_id, False)


@router.post("/segment/{segment_id}/resegment", status_code=202)
async def resegment(segment_id: SegmentId, runtime: RuntimeDep) -> Response:
    segment = await _stored(runtime, segment_id)
    job = runtime.segment_jobs.start(DEFAULT_TENANT, segment.id, name=segment.name)
    return json_response(job, status_code=202)


@router.post("/segments/resegment", status_code=202)
async def resegment_all(runtime: RuntimeDep) -> Response:
    """Every segment evaluated again on every profile; disabled segments' ids are taken off."""
    return json_response(runtime.segment_jobs.start(DEFAULT_TENANT, None), status_code=202)


@router.get("/segment-jobs")
async def list_segment_jobs(runtime: RuntimeDep) -> Response:
    """Jobs kept in memory (the latest ones), newest first."""
    jobs = runtime.segment_jobs.list(DEFAULT_TENANT)
    return json_response({"total": len(jobs), "result": jobs})


@router.get("/segment-jobs/{job_id}")
async def get_segment_job(job_id: JobId, runtime: RuntimeDep) -> Response:
    job = runtime.segment_jobs.get(job_id)
    if job is None or job.tenant != DEFAULT_TENANT:
        raise NotFound(f"segment job {job_id!r} does not exist (or is no longer kept)")
    return json_response(job)
