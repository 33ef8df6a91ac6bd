"""Running one workflow graph for one event.

The run walks the graph from its entry nodes (or, when a delayed step resumes, from the node and
port it stopped at). Each node's action gets the payload that flowed along its incoming edge;
what it answers on a port flows along that port's edges. A payload sent along several edges is
copied, so one branch's changes never show up in another's.

A run stops cleanly at the first failing node: an ``ActionError`` (or a bug in an action) ends the
whole run, its error goes into that node's trace and into the run's ``error``, and the profile
and session documents are put back as they were before the run. A workflow's changes are saved
all together or not at all; the context copies a document the first time a run changes it
(a run that only reads copies nothing), and the engine puts that copy back on failure.

Every node leaves a trace: its input, what it answered (port and payload), how long it took and
its error. Inputs and outputs are copied into the trace only when ``trace_payloads`` is on
(debugging), because copying every payload would cost every event something.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tessera.core.reshaping import copy_json
from tessera.workflow.action import ActionContext, ActionError, BoundExceeded, Output, Suspend
from tessera.workflow.graph import CompiledGraph

log = logging.getLogger(__name__)

# Node runs per workflow run: an acyclic graph of 500 nodes that forks everywhere could still
# multiply its paths; this bounds the work one event can cause.
MAX_STEPS = 2_000


@dataclass(slots=True)
class NodeTrace:
    node_id: str
    action: str
    duration_ms: float
    ports: list[str] = field(default_factory=list)
    error: str | None = None
    input: Any = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    suspended_for_s: float | None = None
    # (level, message) lines the node logged.
    logs: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "node": self.node_id,
            "action": self.action,
            "duration_ms": round(self.duration_ms, 3),
            "ports": self.ports,
            "error": self.error,
        }
        if self.suspended_for_s is not None:
            answer["suspended_for_s"] = self.suspended_for_s
        if self.logs:
            answer["logs"] = [{"level": level, "message": text} for level, text in self.logs]
        if self.input is not None or self.outputs:
            answer["input"] = self.input
            answer["outputs"] = self.outputs
        return answer


@dataclass(frozen=True, slots=True)
class Suspension:
    """Where a run stopped to continue later."""

    node_id: str
    port: str
    payload: Any
    seconds: float


@dataclass(slots=True)
class RunResult:
    traces: list[NodeTrace] = field(default_factory=list)
    error: str | None = None
    suspensions: list[Suspension] = field(default_factory=list)
    # The run stopped at a bound of the profile or of the request's time (BoundExceeded).
    bound_exceeded: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


async def run_graph(
    graph: CompiledGraph,
    context: ActionContext,
    *,
    resume: tuple[str, str, Any] | None = None,
    trace_payloads: bool = False,
) -> RunResult:
    """Run ``graph`` against ``context``; with ``resume`` = (node id, port, payload), continue
    after that node's port instead of starting at the entries."""
    result = RunResult()
    # Copied lazily by the context at the first change (see ActionContext.keep_profile).
    context.profile_before = context.session_before = None
    changed_before = (context.profile_changed, context.session_changed)
    effects_before = (
        len(context.effects.emitted),
        len(context.effects.merge_on),
    )
    queue: deque[tuple[str, Any]] = deque()
    if resume is None:
        queue.extend((entry, {}) for entry in graph.entries)
    else:
        node_id, port, payload = resume
        _follow(graph, queue, node_id, port, payload)
    steps = 0
    while queue:
        steps += 1
        if steps > MAX_STEPS:
            result.error = f"stopped after {MAX_STEPS} node runs"
            break
        node_id, payload = queue.popleft()
        node = graph.nodes[node_id]
        trace = NodeTrace(node_id, node.action.name, 0.0)
        if trace_payloads:
            trace.input = copy_json(payload)
        result.traces.append(trace)
        context.node_id = node_id
        logged = len(context.effects.logs)
        started = time.perf_counter()
        try:
            answer = await node.action.run(payload, context)
        except ActionError as exc:
            trace.error = str(exc) or type(exc).__name__
            result.bound_exceeded = isinstance(exc, BoundExceeded)
        # A plugin's bug must stop its workflow, not the ingestion of the event.
        except Exception as exc:
            log.exception("action %r of node %r failed", node.action.name, node_id)
            trace.error = f"the action failed: {type(exc).__name__}: {exc}"
        trace.duration_ms = (time.perf_counter() - started) * 1000
        trace.logs = context.effects.logs[logged:]
        if trace.error is not None:
            result.error = f"node {node_id!r} ({node.action.name}): {trace.error}"
            break
        if isinstance(answer, Suspend):
            trace.suspended_for_s = answer.seconds
            trace.ports.append(answer.port)
            result.suspensions.append(
                Suspension(node_id, answer.port, copy_json(answer.payload), answer.seconds)
            )
            continue
        outputs = [answer] if isinstance(answer, Output) else (answer or [])
        for output in outputs:
            trace.ports.append(output.port)
            if trace_payloads:
                trace.outputs.append({"port": output.port, "payload": copy_json(output.payload)})
            _follow(graph, queue, node_id, output.port, output.payload)
    if result.error is not None:
        # All or nothing: a failed run leaves the documents and effects as they were.
        context.profile = _restore(context.profile, context.profile_before)
        context.session = _restore(context.session, context.session_before)
        context.profile_changed, context.session_changed = changed_before
        del context.effects.emitted[effects_before[0] :]
        del context.effects.merge_on[effects_before[1] :]
        result.suspensions.clear()
    return result


def _restore(
    current: dict[str, Any] | None, before: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Put ``before`` back into the same dict object: the caller holds a reference to it."""
    if current is None or before is None:
        return current
    current.clear()
    current.update(before)
    return current


def _follow(
    graph: CompiledGraph, queue: deque[tuple[str, Any]], node_id: str, port: str, payload: Any
) -> None:
    targets = graph.next_nodes(node_id, port)
    for index, target in enumerate(targets):
        # The last branch may keep the object; the others get their own copies.
        queue.append((target, payload if index == len(targets) - 1 else copy_json(payload)))
