"""The workflow engine: graphs are checked before they run, runs follow ports, fail cleanly
(all or nothing), trace every node, and pause and resume at delays."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

import tessera.storage.sql.memory  # noqa: F401  (its table is created with the schema)
from tessera.errors import InvalidPayload
from tessera.model.workflow import WorkflowGraph
from tessera.workflow.action import (
    Action,
    ActionConfig,
    ActionContext,
    ActionResult,
    ActionServices,
    Output,
)
from tessera.workflow.engine import run_graph
from tessera.workflow.graph import compile_graph
from tessera.workflow.registry import default_registry

REGISTRY = default_registry(plugins=False)
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def graph(nodes: list[tuple[str, str, dict[str, Any]]], edges: list[tuple[str, str, str]]) -> Any:
    return compile_graph(
        msgspec.convert(
            {
                "nodes": [{"id": i, "action": a, "config": c} for i, a, c in nodes],
                "edges": [{"source": s, "source_port": p, "target": t} for s, p, t in edges],
            },
            WorkflowGraph,
        ),
        REGISTRY,
    )


def context(services: ActionServices, **traits: Any) -> ActionContext:
    return ActionContext(
        tenant="default",
        event={"id": "e1", "type": "purchase", "properties": {"value": 30}},
        profile={"id": "p1", "traits": dict(traits), "segments": [], "stats": {}},
        session={"id": "s1", "properties": {}, "context": {}},
        now=NOW,
        services=services,
    )


# --- Checking graphs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "edges", "problem"),
    [
        ([("a", "no_such_action", {})], [], "no action named 'no_such_action'"),
        ([("a", "set_trait", {"path": "profile@id", "value": 1})], [], "node 'a'"),
        ([("a", "start", {})], [("a", "payload", "b")], "there is no node 'b'"),
        (
            [("a", "start", {}), ("b", "end", {})],
            [("a", "true", "b")],
            "has no output port 'true'",
        ),
        (
            [
                ("a", "start", {}),
                ("b", "log", {"message": "x"}),
                ("c", "log", {"message": "y"}),
            ],
            [("a", "payload", "b"), ("b", "payload", "c"), ("c", "payload", "b")],
            "cycle",
        ),
        ([], [], "at least one node"),
        ([("a", "start", {}), ("a", "end", {})], [], "two nodes have the id 'a'"),
    ],
)
def test_graphs_that_cannot_run_are_refused_naming_the_problem(
    nodes: list[tuple[str, str, dict[str, Any]]], edges: list[tuple[str, str, str]], problem: str
) -> None:
    with pytest.raises(InvalidPayload) as refused:
        graph(nodes, edges)
    assert problem in refused.value.message


def test_entries_are_start_nodes_else_nodes_without_inputs() -> None:
    with_start = graph([("x", "log", {"message": "m"}), ("s", "start", {})], [])
    assert with_start.entries == ("s",)
    without = graph(
        [("a", "log", {"message": "m"}), ("b", "log", {"message": "n"})], [("a", "payload", "b")]
    )
    assert without.entries == ("a",)


# --- Running -----------------------------------------------------------------------------------


async def test_a_run_follows_the_port_a_condition_answers(services: ActionServices) -> None:
    compiled = graph(
        [
            ("start", "start", {}),
            ("count", "increment_trait", {"path": "profile@traits.orders", "by": 1}),
            ("big", "condition", {"condition": "profile@traits.orders >= 2"}),
            ("vip", "add_segment", {"segment": "repeat-buyer"}),
            ("no", "set_trait", {"path": "profile@traits.first", "value": True}),
        ],
        [
            ("start", "payload", "count"),
            ("count", "payload", "big"),
            ("big", "true", "vip"),
            ("big", "false", "no"),
        ],
    )
    first = context(services)
    result = await run_graph(compiled, first)
    assert result.ok
    assert [t.node_id for t in result.traces] == ["start", "count", "big", "no"]
    assert result.traces[2].ports == ["false"]
    assert first.profile is not None
    assert first.profile["traits"] == {"orders": 1, "first": True}
    assert first.profile_changed

    second = context(services, orders=1)
    result = await run_graph(compiled, second)
    assert [t.node_id for t in result.traces] == ["start", "count", "big", "vip"]
    assert second.profile is not None
    assert second.profile["segments"] == ["repeat-buyer"]


async def test_a_fork_gives_each_branch_its_own_payload(services: ActionServices) -> None:
    compiled = graph(
        [
            ("start", "start", {}),
            ("data", "inject_data", {"value": {"n": 1}}),
            ("left", "set_trait", {"path": "payload@n", "value": 2}),
            ("right", "copy_trait", {"source": "payload@n", "target": "profile@traits.n"}),
        ],
        [("start", "payload", "data"), ("data", "payload", "left"), ("data", "payload", "right")],
    )
    ctx = context(services)
    result = await run_graph(compiled, ctx, trace_payloads=True)
    assert result.ok
    assert ctx.profile is not None
    # The right branch still saw n = 1: the left branch changed its own copy.
    assert ctx.profile["traits"]["n"] == 1
    left = next(t for t in result.traces if t.node_id == "left")
    assert left.input == {"n": 1}
    assert left.outputs == [{"port": "payload", "payload": {"n": 2}}]


async def test_a_failing_node_stops_the_run_and_undoes_its_changes(
    services: ActionServices,
) -> None:
    compiled = graph(
        [
            ("start", "start", {}),
            ("set", "set_trait", {"path": "profile@traits.tier", "value": "gold"}),
            ("emit", "emit_event", {"type": "upgraded"}),
            ("fail", "raise_error", {"message": "out of stock"}),
            ("after", "set_trait", {"path": "profile@traits.after", "value": 1}),
        ],
        [
            ("start", "payload", "set"),
            ("set", "payload", "emit"),
            ("emit", "payload", "fail"),
        ],
    )
    ctx = context(services, tier="silver")
    result = await run_graph(compiled, ctx)
    assert result.error == "node 'fail' (raise_error): out of stock"
    assert result.traces[-1].error == "out of stock"
    assert ctx.profile is not None
    assert ctx.profile["traits"] == {"tier": "silver"}
    assert not ctx.profile_changed
    assert ctx.effects.emitted == []


async def test_a_delay_pauses_the_branch_and_resume_continues_after_it(
    services: ActionServices,
) -> None:
    compiled = graph(
        [
            ("start", "start", {}),
            ("wait", "delay", {"seconds": 3600}),
            ("later", "set_trait", {"path": "profile@traits.reminded", "value": True}),
        ],
        [("start", "payload", "wait"), ("wait", "payload", "later")],
    )
    ctx = context(services)
    result = await run_graph(compiled, ctx)
    assert result.ok
    assert [(s.node_id, s.port, s.seconds) for s in result.suspensions] == [
        ("wait", "payload", 3600)
    ]
    assert ctx.profile is not None
    assert "reminded" not in ctx.profile["traits"]

    resumed = context(services)
    result = await run_graph(compiled, resumed, resume=("wait", "payload", {}))
    assert [t.node_id for t in result.traces] == ["later"]
    assert resumed.profile is not None
    assert resumed.profile["traits"]["reminded"] is True


class Broken(Action[ActionConfig]):
    """A third-party action with a bug: the engine must survive it."""

    name = "broken"
    title = "Broken"
    description = "Divides by zero."
    config_model = ActionConfig

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        return Output("payload", 1 / 0)


async def test_an_action_bug_is_reported_as_the_node_failing(services: ActionServices) -> None:
    registry = default_registry(plugins=False)
    registry.register(Broken)
    compiled = compile_graph(
        msgspec.convert(
            {
                "nodes": [
                    {"id": "s", "action": "start"},
                    {
                        "id": "set",
                        "action": "set_trait",
                        "config": {"path": "profile@traits.a", "value": 1},
                    },
                    {"id": "b", "action": "broken"},
                ],
                "edges": [{"source": "s", "target": "set"}, {"source": "set", "target": "b"}],
            },
            WorkflowGraph,
        ),
        registry,
    )
    ctx = context(services)
    result = await run_graph(compiled, ctx)
    assert (
        result.error == "node 'b' (broken): the action failed: ZeroDivisionError: division by zero"
    )
    assert ctx.profile is not None and ctx.profile["traits"] == {}


def test_two_actions_with_one_name_cannot_both_register() -> None:
    class Impostor(Broken):
        pass

    registry = default_registry(plugins=False)
    registry.register(Broken)
    with pytest.raises(ValueError, match="two actions are named 'broken'"):
        registry.register(Impostor)
