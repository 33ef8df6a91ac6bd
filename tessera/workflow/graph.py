"""A workflow graph checked and made ready to run: every node's action built from its
configuration, edges indexed by (node, port), and the entry nodes found.

``compile_graph`` refuses (InvalidPayload naming the node or edge) what could not run: an unknown
action, a configuration the action refuses, an edge from or to a node that does not exist or from
a port the action does not have, a cycle, or a graph with no entry. Graphs are compiled when a
workflow is saved (to answer 422 at once) and again when it is first run in a process (cached by
workflow id and version).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tessera.errors import InvalidPayload
from tessera.model.workflow import WorkflowGraph
from tessera.workflow.action import Action
from tessera.workflow.registry import ActionRegistry

MAX_NODES = 500


@dataclass(frozen=True, slots=True)
class CompiledNode:
    id: str
    action: Action[Any]
    name: str


@dataclass(frozen=True, slots=True)
class CompiledGraph:
    nodes: dict[str, CompiledNode]
    # (node id, output port) → the nodes that port leads to, in the order the edges were given.
    edges: dict[tuple[str, str], tuple[str, ...]]
    entries: tuple[str, ...]

    def next_nodes(self, node_id: str, port: str) -> tuple[str, ...]:
        return self.edges.get((node_id, port), ())


def compile_graph(graph: WorkflowGraph, registry: ActionRegistry) -> CompiledGraph:
    if len(graph.nodes) > MAX_NODES:
        raise InvalidPayload(f"a workflow has at most {MAX_NODES} nodes")
    nodes: dict[str, CompiledNode] = {}
    for index, node in enumerate(graph.nodes):
        if not node.id:
            raise InvalidPayload(f"nodes[{index}]: a node needs an id")
        if node.id in nodes:
            raise InvalidPayload(f"nodes[{index}]: two nodes have the id {node.id!r}")
        action_class = registry.get(node.action)
        try:
            action = action_class.build(node.config)
        except InvalidPayload as exc:
            raise InvalidPayload(f"node {node.id!r}: {exc.message}") from None
        nodes[node.id] = CompiledNode(node.id, action, node.name or action_class.title)
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    has_input: set[str] = set()
    for index, edge in enumerate(graph.edges):
        where = f"edges[{index}] ({edge.source} → {edge.target})"
        source = nodes.get(edge.source)
        if source is None:
            raise InvalidPayload(f"{where}: there is no node {edge.source!r}")
        if edge.target not in nodes:
            raise InvalidPayload(f"{where}: there is no node {edge.target!r}")
        if edge.source_port not in source.action.outputs:
            raise InvalidPayload(
                f"{where}: action {source.action.name!r} has no output port "
                f"{edge.source_port!r} (it has: {', '.join(source.action.outputs)})"
            )
        if edge.target not in edges[(edge.source, edge.source_port)]:
            edges[(edge.source, edge.source_port)].append(edge.target)
        has_input.add(edge.target)
    if not nodes:
        raise InvalidPayload("a workflow needs at least one node")
    starts = [node_id for node_id, node in nodes.items() if node.action.name == "start"]
    entries = starts or [node_id for node_id in nodes if node_id not in has_input]
    if not entries:
        raise InvalidPayload("the workflow has no entry: add a 'start' node")
    compiled = CompiledGraph(
        nodes, {key: tuple(value) for key, value in edges.items()}, tuple(entries)
    )
    _refuse_cycles(compiled)
    return compiled


def _refuse_cycles(graph: CompiledGraph) -> None:
    """A cycle would run forever on a fork-happy graph; workflows are acyclic (a delay or an
    emitted event is the way to do something again later)."""
    successors: dict[str, set[str]] = defaultdict(set)
    for (source, _port), targets in graph.edges.items():
        successors[source].update(targets)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph.nodes:
        if root in state:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(successors[root]))]
        state[root] = 1
        while stack:
            node, pending = stack[-1]
            if not pending:
                state[node] = 2
                stack.pop()
                continue
            child = pending.pop()
            if state.get(child) == 1:
                raise InvalidPayload(f"the workflow has a cycle through node {child!r}")
            if child not in state:
                state[child] = 1
                stack.append((child, sorted(successors[child])))
