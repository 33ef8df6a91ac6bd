"""The rules and deployed workflows the ingest path needs, from memory.

Rules are read once per tenant per ``ttl_s`` (one query for all of them) and indexed by event
type, so matching an event costs a dictionary lookup. Deployed workflows are compiled once per
(tenant, id, version). ``forget`` drops a tenant's cache when this process changes a rule or a
workflow, so a change applies at once here and within ``ttl_s`` in other processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from tessera.core.loading_cache import LoadingCache
from tessera.errors import InvalidPayload
from tessera.model.workflow import Rule, Workflow
from tessera.storage.automation_ports import DocumentStore
from tessera.storage.write_through import WriteThrough
from tessera.workflow.graph import CompiledGraph, compile_graph
from tessera.workflow.registry import ActionRegistry


@dataclass(frozen=True, slots=True)
class DeployedWorkflow:
    workflow: Workflow
    graph: CompiledGraph


class RuleBook(WriteThrough[Rule]):
    def __init__(self, store: DocumentStore[Rule], *, ttl_s: float) -> None:
        self.store = store
        self._by_type: LoadingCache[str, dict[str, list[Rule]]] = LoadingCache(
            self._load, ttl_s=ttl_s
        )

    async def _load(self, tenant: str) -> dict[str, list[Rule]]:
        by_type: dict[str, list[Rule]] = {}
        for rule in await self.store.list(tenant):
            if rule.enabled:
                by_type.setdefault(rule.event_type, []).append(rule)
        return by_type

    async def for_event_type(self, tenant: str, event_type: str) -> list[Rule]:
        """Enabled rules for this event type, oldest first."""
        return (await self._by_type.get(tenant)).get(event_type, [])

    def forget(self, tenant: str) -> None:
        self._by_type.forget(lambda key: key == tenant)


class WorkflowDirectory(WriteThrough[Workflow]):
    def __init__(
        self, store: DocumentStore[Workflow], registry: ActionRegistry, *, ttl_s: float
    ) -> None:
        self.store = store
        self.registry = registry
        self._deployed: LoadingCache[tuple[str, str], DeployedWorkflow | None] = LoadingCache(
            self._load, ttl_s=ttl_s
        )
        self._compiled: dict[tuple[str, str, int], CompiledGraph] = {}

    async def deployed(self, tenant: str, workflow_id: str) -> DeployedWorkflow | None:
        """The workflow's deployed graph, compiled; None when it does not exist, is disabled,
        was never deployed, or no longer compiles (an action plugin was uninstalled)."""
        return await self._deployed.get((tenant, workflow_id))

    async def _load(self, key: tuple[str, str]) -> DeployedWorkflow | None:
        workflow = await self.store.get(*key)
        if workflow is None or not workflow.enabled or workflow.deployed is None:
            return None
        graph = self._compile(workflow)
        return DeployedWorkflow(workflow, graph) if graph is not None else None

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
        self._deployed.forget(lambda key: key[0] == tenant)
        for compiled_key in [key for key in self._compiled if key[0] == tenant]:
            del self._compiled[compiled_key]
