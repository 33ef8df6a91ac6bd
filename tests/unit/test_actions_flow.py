"""The flow actions (start, end, condition, property_exists, log, raise_error, inject_data) and
the template action, run on real services over a real SQLite database."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import tessera.storage.sql.memory  # noqa: F401  (defines the memory table create_schema makes)
from tessera.errors import InvalidPayload
from tessera.workflow.action import ActionContext, ActionError, ActionServices, Output
from tessera.workflow.actions.flow import (
    CheckCondition,
    End,
    InjectData,
    LogMessage,
    PropertyExists,
    RaiseError,
    Start,
)
from tessera.workflow.actions.template import RenderTemplate
from tessera.workflow.registry import default_registry

MakeContext = Callable[..., ActionContext]


@pytest.fixture
async def make_context(services: ActionServices) -> AsyncIterator[MakeContext]:
    """Builds contexts over one real SQLite memory store and one real HTTP client."""

    def build(
        event: dict[str, Any] | None = None,
        profile: dict[str, Any] | None = None,
        session: dict[str, Any] | None = None,
    ) -> ActionContext:
        return ActionContext(
            tenant="t1",
            event=event if event is not None else _event(),
            profile=profile,
            session=session,
            now=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            services=services,
            workflow_id="wf1",
            node_id="n1",
        )

    yield build


def _event() -> dict[str, Any]:
    return {
        "id": "e1",
        "type": "purchase",
        "properties": {"price": 120, "plan": "pro", "items": ["a", "b"]},
        "context": {"page": {"url": "https://shop.example/cart?x=1"}},
    }


def _profile() -> dict[str, Any]:
    return {
        "id": "p1",
        "traits": {"name": "Ada", "plan": "free"},
        "stats": {"orders": 3},
        "data": {},
        "consents": {},
        "interests": {},
    }


def _single(result: object) -> Output:
    assert isinstance(result, Output)
    return result


def test_every_action_here_is_registered() -> None:
    names = set(default_registry(plugins=False).names())
    assert {
        "start",
        "end",
        "condition",
        "property_exists",
        "log",
        "raise_error",
        "inject_data",
        "template",
    } <= names


async def test_start_passes_the_payload_on(make_context: MakeContext) -> None:
    payload = {"a": 1}
    out = _single(await Start.build({}).run(payload, make_context()))
    assert out == Output("payload", {"a": 1})


async def test_end_ends_the_branch(make_context: MakeContext) -> None:
    assert await End.build({}).run({"a": 1}, make_context()) is None


def test_start_and_end_refuse_settings() -> None:
    with pytest.raises(InvalidPayload, match="start"):
        Start.build({"anything": 1})
    with pytest.raises(InvalidPayload, match="end"):
        End.build({"x": True})


async def test_condition_true_branch_keeps_the_payload(make_context: MakeContext) -> None:
    action = CheckCondition.build(
        {"condition": "event@properties.price > 100 AND profile@traits.name == 'Ada'"}
    )
    payload = {"keep": "me"}
    out = _single(await action.run(payload, make_context(profile=_profile())))
    assert out.port == "true"
    assert out.payload == {"keep": "me"}


async def test_condition_false_branch(make_context: MakeContext) -> None:
    action = CheckCondition.build({"condition": "profile@stats.orders >= 10"})
    out = _single(await action.run({}, make_context(profile=_profile())))
    assert out == Output("false", {})


async def test_condition_on_a_missing_profile_reads_missing_fields(
    make_context: MakeContext,
) -> None:
    action = CheckCondition.build({"condition": "profile@traits.name NOT EXISTS"})
    assert _single(await action.run({}, make_context(profile=None))).port == "true"


async def test_condition_reads_the_session(make_context: MakeContext) -> None:
    action = CheckCondition.build({"condition": "session@context.device == 'mobile'"})
    context = make_context(session={"context": {"device": "mobile"}, "properties": {}})
    assert _single(await action.run({}, context)).port == "true"


@pytest.mark.parametrize(
    "condition",
    ["profile@traits.age >", "payload@total > 3", "", "nobody@x == 1"],
)
def test_condition_refuses_what_does_not_parse(condition: str) -> None:
    with pytest.raises(InvalidPayload, match="condition"):
        CheckCondition.build({"condition": condition})


async def test_property_exists(make_context: MakeContext) -> None:
    context = make_context(profile=_profile())
    present = PropertyExists.build({"path": "profile@traits.name"})
    absent = PropertyExists.build({"path": "profile@traits.email"})
    in_payload = PropertyExists.build({"path": "payload@order.id"})
    assert _single(await present.run({"p": 1}, context)) == Output("true", {"p": 1})
    assert _single(await absent.run({"p": 1}, context)) == Output("false", {"p": 1})
    payload = {"order": {"id": None}}
    assert _single(await in_payload.run(payload, context)) == Output("true", payload)


def test_property_exists_refuses_a_bad_path() -> None:
    with pytest.raises(InvalidPayload, match="must start with"):
        PropertyExists.build({"path": "traits.name"})
    with pytest.raises(InvalidPayload, match="path"):
        PropertyExists.build({})


async def test_log_records_the_rendered_line(
    make_context: MakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    action = LogMessage.build(
        {
            "message": "{{ profile.traits.name }} paid {{ event.properties.price }}",
            "level": "warning",
        }
    )
    context = make_context(profile=_profile())
    with caplog.at_level(logging.WARNING, logger="tessera.workflow.actions.flow"):
        out = _single(await action.run({"x": 1}, context))
    assert out == Output("payload", {"x": 1})
    assert context.effects.logs == [("warning", "Ada paid 120")]
    assert any("Ada paid 120" in record.getMessage() for record in caplog.records)
    assert any("wf1" in record.getMessage() for record in caplog.records)


async def test_log_reads_the_payload_and_defaults_to_info(make_context: MakeContext) -> None:
    action = LogMessage.build({"message": "total {{ payload.total }}"})
    context = make_context()
    await action.run({"total": 9}, context)
    assert context.effects.logs == [("info", "total 9")]


async def test_log_does_not_stop_on_a_failing_template(make_context: MakeContext) -> None:
    # It compiles, but a list plus a number fails on this event.
    action = LogMessage.build({"message": "{{ event.properties.items + 1 }}"})
    context = make_context()
    out = _single(await action.run({}, context))
    assert out.port == "payload"
    level, message = context.effects.logs[0]
    assert level == "info"
    assert message.startswith("{{ event.properties.items + 1 }} (")
    assert "failed" in message


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"message": "{{ secrets }}"}, "unknown name"),
        ({"message": "{% for x in y %}{% endfor %}"}, "only"),
        ({"message": "hi", "level": "loud"}, "level"),
        ({"message": ""}, "message"),
    ],
)
def test_log_refuses_bad_configs(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        LogMessage.build(config)


async def test_raise_error_stops_with_its_message(make_context: MakeContext) -> None:
    action = RaiseError.build({"message": "customer is blocked"})
    with pytest.raises(ActionError, match="customer is blocked"):
        await action.run({}, make_context())


def test_raise_error_needs_a_message() -> None:
    with pytest.raises(InvalidPayload, match="message"):
        RaiseError.build({})


async def test_inject_data_replaces_the_payload_with_a_private_copy(
    make_context: MakeContext,
) -> None:
    action = InjectData.build({"value": {"list": [1, 2], "nested": {"a": True}}})
    first = _single(await action.run({"old": 1}, make_context()))
    assert first == Output("payload", {"list": [1, 2], "nested": {"a": True}})
    first.payload["list"].append(3)
    second = _single(await action.run({}, make_context()))
    assert second.payload["list"] == [1, 2]


async def test_inject_data_merges_into_an_object_payload(make_context: MakeContext) -> None:
    action = InjectData.build({"value": {"b": 2, "a": 10}, "merge": True})
    out = _single(await action.run({"a": 1, "c": 3}, make_context()))
    assert out.payload == {"a": 10, "b": 2, "c": 3}


async def test_inject_data_merge_into_a_list_payload_fails(make_context: MakeContext) -> None:
    action = InjectData.build({"value": {"b": 2}, "merge": True})
    with pytest.raises(ActionError, match="list"):
        await action.run([1, 2], make_context())


async def test_inject_data_scalars(make_context: MakeContext) -> None:
    assert _single(await InjectData.build({"value": 5}).run({}, make_context())).payload == 5
    assert _single(await InjectData.build({"value": None}).run({}, make_context())).payload is None


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"value": [1], "merge": True}, "only an object"),
        ({"value": {1, 2}}, "not a JSON value"),
        ({"value": float("nan")}, "not a JSON value"),
        ({}, "value"),
    ],
)
def test_inject_data_refuses_bad_configs(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        InjectData.build(config)


async def test_template_writes_text_into_the_payload(make_context: MakeContext) -> None:
    action = RenderTemplate.build(
        {"template": "Hello {{ profile.traits.name | upper }}, {{ payload.n }} items"}
    )
    out = _single(await action.run({"n": 2}, make_context(profile=_profile())))
    assert out == Output("payload", {"n": 2, "text": "Hello ADA, 2 items"})


async def test_template_result_is_always_text(make_context: MakeContext) -> None:
    context = make_context(profile=_profile())
    number = RenderTemplate.build({"template": "{{ event.properties.price }}"})
    assert _single(await number.run({}, context)).payload == {"text": "120"}
    listed = RenderTemplate.build({"template": "{{ event.properties.items }}"})
    assert _single(await listed.run({}, context)).payload == {"text": '["a", "b"]'}
    missing = RenderTemplate.build({"template": "{{ event.properties.nothing }}"})
    assert _single(await missing.run({}, context)).payload == {"text": ""}


async def test_template_writes_the_profile(make_context: MakeContext) -> None:
    action = RenderTemplate.build(
        {
            "template": "{{ event.properties.plan }}-{{ profile.stats.orders }}",
            "target": "profile@traits.label",
        }
    )
    profile = _profile()
    context = make_context(profile=profile)
    out = _single(await action.run({"p": 1}, context))
    assert out.payload == {"p": 1}
    assert profile["traits"]["label"] == "pro-3"
    assert context.profile_changed


async def test_template_failing_at_run_time_is_an_action_error(make_context: MakeContext) -> None:
    action = RenderTemplate.build({"template": "{{ event.properties.items + 1 }}"})
    with pytest.raises(ActionError, match="failed"):
        await action.run({}, make_context())


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"template": "{{ os.system }}"}, "unknown name"),
        ({"template": "{{ event.__class__ }}"}, "not allowed"),
        ({"template": "x" * 1_001 + "{{ event }}"}, "longer than"),
        ({"template": "hi", "target": "event@properties.x"}, "cannot be changed"),
        ({"template": "hi", "target": "profile@id"}, "only these parts"),
        ({"template": ""}, "template"),
    ],
)
def test_template_refuses_bad_configs(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        RenderTemplate.build(config)
