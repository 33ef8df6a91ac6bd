"""Rules and workflows: what makes the data act.

A ``Rule`` notices events (by type, optionally by source, segment and condition) and names the
workflow to run for each one. A ``Workflow`` is a directed graph: ``nodes`` each run one action
with its configuration, ``edges`` lead from one node's output port to the next node. A workflow
has a ``draft`` graph (edited freely, debugged) and a ``deployed`` graph (what rules run);
``POST /workflow/{id}/deploy`` copies the draft over the deployed one and bumps ``version``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class WorkflowNode(msgspec.Struct, kw_only=True):
    id: str
    # The registered name of the action (``set_trait``, ``http_call`` …).
    action: str
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    name: str = ""


class WorkflowEdge(msgspec.Struct, kw_only=True):
    source: str
    target: str
    # The output port of the source node this edge leaves from.
    source_port: str = "payload"
    target_port: str = "payload"


class WorkflowGraph(msgspec.Struct, kw_only=True):
    nodes: list[WorkflowNode] = msgspec.field(default_factory=list)
    edges: list[WorkflowEdge] = msgspec.field(default_factory=list)


class Workflow(msgspec.Struct, kw_only=True):
    tenant: str
    id: str
    name: str
    created: datetime
    draft: WorkflowGraph
    # None until first deployed; rules only run deployed graphs.
    deployed: WorkflowGraph | None = None
    description: str = ""
    enabled: bool = True
    # Grows by one on each deploy; traces and schedules name the version they ran.
    version: int = 0
    updated: datetime | None = None


class Rule(msgspec.Struct, kw_only=True):
    tenant: str
    id: str
    name: str
    # Normalised event type this rule listens to.
    event_type: str
    workflow_id: str
    created: datetime
    source_id: str | None = None
    # Only profiles in this segment trigger the rule.
    segment: str | None = None
    # Condition language over event, profile and session.
    condition: str | None = None
    # Consent ids the profile must have granted (or take as granted by default).
    required_consents: list[str] = msgspec.field(default_factory=list)
    enabled: bool = True
    description: str = ""
