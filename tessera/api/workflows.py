"""Workflows over HTTP: create, edit the draft, deploy, enable/disable, debug; and the actions
there are to build them from.

- ``GET /actions``: every registered action with its configuration schema and output ports
- ``POST /workflow``: create, or replace the one with the same id (201 / 200)
- ``GET /workflows``, ``GET|PATCH|DELETE /workflow/{id}``
- ``POST /workflow/{id}/deploy``: the draft becomes what rules run (version + 1)
- ``POST /workflow/{id}/enable`` and ``/disable``
- ``POST /workflow/{id}/debug``: run the draft (or the deployed graph) against a stored event or
  a given one, save nothing, answer the trace of every node

A graph is compiled before it is stored: an unknown action, a configuration it refuses, an edge
to nowhere, a port the action does not have or a cycle is a 422 naming the node or the edge.
Secret configuration fields are answered as ``********``; sending that back keeps the secret.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field, field_validator

from tessera.api.deps import RuntimeDep, current_user, json_response
from tessera.api.ids import url_safe_id
from tessera.core.patterns import off_the_loop
from tessera.errors import InvalidPayload, NotFound
from tessera.model.common import DEFAULT_TENANT, Ref, new_id, utcnow
from tessera.model.event import Event, EventMetadata, checked_event_type
from tessera.model.profile import new_profile
from tessera.model.workflow import Workflow, WorkflowGraph
from tessera.runtime import Runtime
from tessera.workflow.action import ActionContext
from tessera.workflow.directory import DeployedWorkflow
from tessera.workflow.engine import run_graph
from tessera.workflow.graph import CompiledGraph, compile_graph
from tessera.workflow.registry import ActionRegistry
from tessera.workflow.stage import trace_entry

router = APIRouter(tags=["workflows"], dependencies=[Depends(current_user)])

WorkflowId = Annotated[str, Path(max_length=128)]


class NodeIn(BaseModel):
    id: str = Field(min_length=1, max_length=128)
    action: str = Field(min_length=1, max_length=128, description="A name from GET /actions")
    config: dict[str, Any] = Field(default_factory=dict)
    name: str = Field("", max_length=255)


class EdgeIn(BaseModel):
    source: str = Field(min_length=1, max_length=128)
    target: str = Field(min_length=1, max_length=128)
    source_port: str = Field("payload", min_length=1, max_length=64)
    target_port: str = Field("payload", min_length=1, max_length=64)


class GraphIn(BaseModel):
    nodes: list[NodeIn] = Field(max_length=500)
    edges: list[EdgeIn] = Field(default_factory=list, max_length=2000)


class WorkflowIn(BaseModel):
    id: str | None = Field(None, description="Kept when given (URL-safe, ≤128); else generated")
    name: str = Field(min_length=1, max_length=255)
    description: str = Field("", max_length=10_000)
    draft: GraphIn
    enabled: bool = True
    deploy: bool = Field(False, description="Deploy the draft at once")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        return url_safe_id(value)


class WorkflowPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=10_000)
    draft: GraphIn | None = None
    enabled: bool | None = None


class DebugEventIn(BaseModel):
    type: str = Field(min_length=1, max_length=255)
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    source_id: str = Field("debug", max_length=128)


class DebugIn(BaseModel):
    event_id: str | None = Field(None, max_length=128, description="Run against a stored event")
    event: DebugEventIn | None = Field(None, description="…or against this event")
    profile: dict[str, Any] | None = Field(
        None,
        description="The profile document to run on; else the stored event's profile (with "
        "`event_id`) or an empty profile (with `event`)",
    )
    graph: Literal["draft", "deployed"] = "draft"


async def _graph(
    body: GraphIn, registry: ActionRegistry, previous: Workflow | None
) -> WorkflowGraph:
    graph = msgspec.convert(body.model_dump(), WorkflowGraph)
    _keep_secrets(graph, previous, registry)
    await _compiled(graph, registry)
    return graph


async def _compiled(graph: WorkflowGraph, registry: ActionRegistry) -> CompiledGraph:
    """Compiled off the event loop, within a time limit: nodes compile user patterns
    (``regex_match``), bounded in size but still not free (core/patterns.py)."""
    compiled: CompiledGraph = await off_the_loop(compile_graph, graph, registry)
    return compiled


def _keep_secrets(
    graph: WorkflowGraph, previous: Workflow | None, registry: ActionRegistry
) -> None:
    """A secret sent back as REDACTED keeps the value stored for the same node and action."""
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    if previous is not None:
        for old_graph in (previous.draft, previous.deployed):
            for node in old_graph.nodes if old_graph else ():
                stored.setdefault((node.id, node.action), node.config)
    for node in graph.nodes:
        try:
            action = registry.get(node.action)
        except InvalidPayload:
            continue  # compile_graph says so, naming the node
        try:
            action.keep_secrets(node.config, stored.get((node.id, node.action)))
        except InvalidPayload as exc:
            raise InvalidPayload(f"node {node.id!r}: {exc.message}") from None


def _redacted(workflow: Workflow, registry: ActionRegistry) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(workflow)
    for key in ("draft", "deployed"):
        graph = document.get(key)
        for node in graph["nodes"] if graph else ():
            try:
                node["config"] = registry.get(node["action"]).redact(node["config"])
            except InvalidPayload:
                continue  # an action no longer installed: nothing known to hide
    return document


async def _stored(runtime: Runtime, workflow_id: str) -> Workflow:
    workflow = await runtime.storage.workflows.get(DEFAULT_TENANT, workflow_id)
    if workflow is None:
        raise NotFound(f"workflow {workflow_id!r} does not exist")
    return workflow


async def _save(runtime: Runtime, workflow: Workflow, status_code: int = 200) -> Response:
    await runtime.automation.workflows.save(workflow)
    return json_response(_redacted(workflow, runtime.actions), status_code=status_code)


def _deployed(workflow: Workflow) -> Workflow:
    return msgspec.structs.replace(
        workflow, deployed=workflow.draft, version=workflow.version + 1, updated=utcnow()
    )


@router.get("/actions")
async def list_actions(runtime: RuntimeDep) -> Response:
    """The actions a workflow node can run, with their configuration schemas and ports."""
    described = runtime.actions.describe()
    return json_response({"total": len(described), "result": described})


@router.post("/workflow", status_code=201)
async def save_workflow(body: WorkflowIn, runtime: RuntimeDep) -> Response:
    workflow_id = body.id or new_id()
    previous = await runtime.storage.workflows.get(DEFAULT_TENANT, workflow_id)
    now = utcnow()
    workflow = Workflow(
        tenant=DEFAULT_TENANT,
        id=workflow_id,
        name=body.name,
        description=body.description,
        created=previous.created if previous else now,
        updated=now,
        draft=await _graph(body.draft, runtime.actions, previous),
        deployed=previous.deployed if previous else None,
        version=previous.version if previous else 0,
        enabled=body.enabled,
    )
    if body.deploy:
        workflow = _deployed(workflow)
    return await _save(runtime, workflow, status_code=200 if previous else 201)


@router.get("/workflows")
async def list_workflows(runtime: RuntimeDep) -> Response:
    workflows = await runtime.storage.workflows.list(DEFAULT_TENANT)
    result = [_redacted(workflow, runtime.actions) for workflow in workflows]
    return json_response({"total": len(result), "result": result})


@router.get("/workflow/{workflow_id}")
async def get_workflow(workflow_id: WorkflowId, runtime: RuntimeDep) -> Response:
    return json_response(_redacted(await _stored(runtime, workflow_id), runtime.actions))


@router.patch("/workflow/{workflow_id}")
async def update_workflow(
    workflow_id: WorkflowId, body: WorkflowPatch, runtime: RuntimeDep
) -> Response:
    """Edits the draft (and name, description, enabled); the deployed graph stays until deploy."""
    workflow = await _stored(runtime, workflow_id)
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("name", body.name),
            ("description", body.description),
            ("enabled", body.enabled),
        )
        if value is not None
    }
    if body.draft is not None:
        changes["draft"] = await _graph(body.draft, runtime.actions, workflow)
    return await _save(runtime, msgspec.structs.replace(workflow, updated=utcnow(), **changes))


@router.delete("/workflow/{workflow_id}", status_code=204)
async def delete_workflow(workflow_id: WorkflowId, runtime: RuntimeDep) -> Response:
    if not await runtime.automation.workflows.delete(DEFAULT_TENANT, workflow_id):
        raise NotFound(f"workflow {workflow_id!r} does not exist")
    return Response(status_code=204)


@router.post("/workflow/{workflow_id}/deploy")
async def deploy_workflow(workflow_id: WorkflowId, runtime: RuntimeDep) -> Response:
    """The draft becomes the graph rules run; the version grows by one."""
    workflow = await _stored(runtime, workflow_id)
    await _compiled(workflow.draft, runtime.actions)
    return await _save(runtime, _deployed(workflow))


@router.post("/workflow/{workflow_id}/enable")
async def enable_workflow(workflow_id: WorkflowId, runtime: RuntimeDep) -> Response:
    workflow = await _stored(runtime, workflow_id)
    return await _save(runtime, msgspec.structs.replace(workflow, enabled=True))


@router.post("/workflow/{workflow_id}/disable")
async def disable_workflow(workflow_id: WorkflowId, runtime: RuntimeDep) -> Response:
    workflow = await _stored(runtime, workflow_id)
    return await _save(runtime, msgspec.structs.replace(workflow, enabled=False))


@router.post("/workflow/{workflow_id}/debug")
async def debug_workflow(workflow_id: WorkflowId, body: DebugIn, runtime: RuntimeDep) -> Response:
    """Run the workflow on copies of the documents: no change to a profile, session or event
    is saved, no delay is scheduled, no event is emitted. Actions that call other systems
    (HTTP, e-mail, Slack) do call them, and memory actions do write."""
    workflow = await _stored(runtime, workflow_id)
    source = workflow.draft if body.graph == "draft" else workflow.deployed
    if source is None:
        raise InvalidPayload("the workflow has never been deployed; debug its draft")
    graph = await _compiled(source, runtime.actions)
    event, profile, session = await _debug_subject(runtime, body)
    context = ActionContext(
        tenant=DEFAULT_TENANT,
        event=msgspec.to_builtins(event),
        profile=profile,
        session=session,
        now=utcnow(),
        services=runtime.automation.services,
        workflow_id=workflow.id,
        debug=True,
    )
    result = await run_graph(graph, context, trace_payloads=True)
    deployed = DeployedWorkflow(workflow, graph)
    answer = trace_entry(event, None, deployed, result)
    # A draft has no version of its own yet: it becomes version + 1 when deployed.
    answer["workflow"]["version"] = workflow.version if body.graph == "deployed" else None
    answer.update(
        profile=context.profile,
        session=context.session,
        profile_changed=context.profile_changed,
        session_changed=context.session_changed,
        effects={
            "emitted": [
                {"type": wanted.type, "properties": wanted.properties}
                for wanted in context.effects.emitted
            ],
            "merge_on": context.effects.merge_on,
            "logs": [
                {"level": level, "message": message} for level, message in context.effects.logs
            ],
        },
    )
    return json_response(answer)


async def _debug_subject(
    runtime: Runtime, body: DebugIn
) -> tuple[Event, dict[str, Any] | None, dict[str, Any] | None]:
    storage = runtime.storage
    if body.event_id is not None:
        event = await storage.events.get(DEFAULT_TENANT, body.event_id)
        if event is None:
            raise NotFound(f"event {body.event_id!r} does not exist")
    elif body.event is not None:
        now = utcnow()
        event_type = checked_event_type(body.event.type, "event.type")
        event = Event(
            id=new_id(),
            tenant=DEFAULT_TENANT,
            type=event_type,
            time=now,
            metadata=EventMetadata(insert=now),
            source=Ref(body.event.source_id),
            properties=body.event.properties,
            context=body.event.context,
        )
    else:
        raise InvalidPayload("give 'event_id' (a stored event) or 'event'")
    profile: dict[str, Any] | None = body.profile
    if profile is None and event.profile is not None:
        stored = await storage.profiles.get(DEFAULT_TENANT, event.profile.id)
        profile = msgspec.to_builtins(stored) if stored is not None else None
    if profile is None and body.event is not None:
        # A new, empty profile, shaped like every stored one.
        profile = msgspec.to_builtins(new_profile("debug", DEFAULT_TENANT, utcnow()))
    session: dict[str, Any] | None = None
    if event.session is not None:
        stored_session = await storage.sessions.get(DEFAULT_TENANT, event.session.id)
        session = msgspec.to_builtins(stored_session) if stored_session is not None else None
    if session is None and body.event is not None:
        session = {"id": "debug", "properties": {}, "context": {}}
    return event, profile, session
