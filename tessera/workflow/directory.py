"""The rules and deployed workflows the ingest path needs, from memory.

Rules are read once per tenant per ``ttl_s`` (one query for all of them) and indexed by event
type, so matching an event costs a dictionary lookup. Deployed workflows are compiled once per
(tenant, id, version). ``forget`` drops a tenant's cache when this process changes a rule or a
workflow, so a change applies at once here and within ``ttl_s`` in other processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tessera.errors import InvalidPayload
from tessera.model.workflow import Rule, Workflow
from tessera.storage.automation_ports import DocumentStore
from tessera.workflow.graph import CompiledGraph, compile_graph
from tessera.workflow.registry import ActionRegistry


@dataclass(frozen=True, slots=True)
class DeployedWorkflow:
    workflow: Workflow
    graph: CompiledGraph


class RuleBook:
    def __init__(self, store: DocumentStore[Rule], *, ttl_s: float) -> None:
        self.store = store
        self._ttl_s = ttl_s
        self._cached: dict[str, tuple[float, dict[str, list[Rule]]]] = {}

    async def for_event_type(self, tenant: str, event_type: str) -> list[Rule]:
        """Enabled rules for this event type, oldest first."""
        cached = self._cached.get(tenant)
        now = time.monotonic()
        if cached is None or cached[0] <= now:
            by_type: dict[str, list[Rule]] = {}
            for rule in await self.store.list(tenant):
                if rule.enabled:
                    by_type.setdefault(rule.event_type, []).append(rule)
            cached = (now + self._ttl_s, by_type)
            self._cached[tenant] = cached
        return cached[1].get(event_type, [])

    def forget(self, tenant: str) -> None:
        self._cached.pop(tenant, None)


class WorkflowDirectory:
    def __init__(
        self, store: DocumentStore[Workflow], registry: ActionRegistry, *, ttl_s: float
    ) -> None:
        self.store = store
        self.registry = registry
        self._ttl_s = ttl_s
        self._cached: dict[tuple[str, str], tuple[float, DeployedWorkflow | None]] = {}
        self._compiled: dict[tuple[str, str, int], CompiledGraph] = {}

    async def deployed(self, tenant: str, workflow_id: str) -> DeployedWorkflow | None:
        """The workflow's deployed graph, compiled; None when it does not exist, is disabled,
        was never deployed, or no longer compiles (an action plugin was uninstalled)."""
        key = (tenant, workflow_id)
        now = time.monotonic()
        cached = self._cached.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        workflow = await self.store.get(tenant, workflow_id)
        found: DeployedWorkflow | None = None
        if workflow is not None and workflow.enabled and workflow.deployed is not None:
            graph = self._compile(workflow)
            found = DeployedWorkflow(workflow, graph) if graph is not None else None
        self._cached[key] = (now + self._ttl_s, found)
        return found

    def _compile(self, workflow: Workflow) -> CompiledGraph | None:
        key = (workflow.tenant, workflow.id, workflow.version)
        graph = self._compiled.get(key)
        if graph is None and workflow.deployed is not None:
            try:
                graph = compile_graph(workflow.deployed, self.registry)
            except InvalidPayload:
                return None
            self._compiled[key] = graph
        return graph

    def forget(self, tenant: str) -> None:
        for key in [key for key in self._cached if key[0] == tenant]:
            del self._cached[key]
        for compiled_key in [key for key in self._compiled if key[0] == tenant]:
            del self._compiled[compiled_key]
