"""The value actions: set/copy/append/delete/increment a trait, calculator, regex_match and
parse_url, run on real services over a real SQLite database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import tessera.storage.sql.memory  # noqa: F401  (defines the memory table create_schema makes)
from tessera.errors import InvalidPayload
from tessera.workflow.action import ActionContext, ActionError, ActionServices, Output
from tessera.workflow.actions.calculator import Calculator
from tessera.workflow.actions.regex import RegexMatch
from tessera.workflow.actions.traits import (
    AppendTrait,
    CopyTrait,
    DeleteTrait,
    IncrementTrait,
    SetTrait,
)
from tessera.workflow.actions.url import ParseUrl
from tessera.workflow.registry import default_registry

MakeContext = Callable[..., ActionContext]


@pytest.fixture
async def make_context(services: ActionServices) -> AsyncIterator[MakeContext]:
    """Builds contexts over one real SQLite memory store and one real HTTP client; each gets
    its own copy of the event, profile and session below unless given others."""

    def build(
        event: dict[str, Any] | None = None,
        profile: dict[str, Any] | None = None,
        session: dict[str, Any] | None = None,
        *,
        no_profile: bool = False,
    ) -> ActionContext:
        return ActionContext(
            tenant="t1",
            event=event if event is not None else _event(),
            profile=None if no_profile else profile if profile is not None else _profile(),
            session=session if session is not None else _session(),
            now=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            services=services,
        )

    yield build


def _event() -> dict[str, Any]:
    return {
        "id": "e1",
        "type": "purchase",
        "properties": {
            "price": 120,
            "plan": "pro",
            "email": "Ada@Example.com",
            "tags": ["x", "y"],
            "label": "yes",
        },
        "context": {
            "page": {"url": "https://Shop.Example:8443/cart/view?tag=a&tag=b&q=&one=1#top"}
        },
    }


def _profile() -> dict[str, Any]:
    return {
        "id": "p1",
        "traits": {"name": "Ada", "tags": ["x"], "coupon": "SPRING"},
        "stats": {"orders": 3, "spent": 10.5},
        "data": {},
        "consents": {},
        "interests": {},
    }


def _session() -> dict[str, Any]:
    return {"id": "s1", "properties": {}, "context": {}}


def _single(result: object) -> Output:
    assert isinstance(result, Output)
    return result


def test_every_action_here_is_registered() -> None:
    names = set(default_registry(plugins=False).names())
    assert {
        "set_trait",
        "copy_trait",
        "append_trait",
        "delete_trait",
        "increment_trait",
        "calculator",
        "regex_match",
        "parse_url",
    } <= names


# --- set_trait -----------------------------------------------------------------------------


async def test_set_trait_writes_a_plain_value(make_context: MakeContext) -> None:
    context = make_context()
    action = SetTrait.build({"path": "profile@traits.tier", "value": {"level": 2}})
    out = _single(await action.run({"p": 1}, context))
    assert out == Output("payload", {"p": 1})
    assert context.profile is not None
    assert context.profile["traits"]["tier"] == {"level": 2}
    assert context.profile_changed


async def test_set_trait_renders_templates_keeping_types(make_context: MakeContext) -> None:
    context = make_context()
    action = SetTrait.build(
        {
            "path": "session@properties.last",
            "value": {
                "plan": "{{ event.properties.plan }}",
                "price": "{{ event.properties.price }}",
                "text": "{{ profile.traits.name }} via {{ payload.channel }}",
            },
        }
    )
    await action.run({"channel": "web"}, context)
    assert context.session is not None
    assert context.session["properties"]["last"] == {
        "plan": "pro",
        "price": 120,
        "text": "Ada via web",
    }
    assert context.session_changed
    assert not context.profile_changed


async def test_set_trait_into_the_payload(make_context: MakeContext) -> None:
    action = SetTrait.build(
        {"path": "payload@order.total", "value": "{{ event.properties.price }}"}
    )
    out = _single(await action.run({"a": 1}, make_context()))
    assert out.payload == {"a": 1, "order": {"total": 120}}


async def test_set_trait_without_a_profile_fails(make_context: MakeContext) -> None:
    action = SetTrait.build({"path": "profile@traits.x", "value": 1})
    with pytest.raises(ActionError, match="no profile"):
        await action.run({}, make_context(no_profile=True))


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"path": "event@properties.x", "value": 1}, "cannot be changed"),
        ({"path": "profile@traits", "value": {}}, "name a key inside"),
        ({"path": "profile@id", "value": "x"}, "only these parts"),
        ({"path": "profile@traits.x", "value": "{{ secret }}"}, "unknown name"),
        ({"path": "profile@traits.x", "value": ["{{ a.b }}"]}, r"value\[0\]"),
        ({"value": 1}, "path"),
        ({"path": "profile@traits.x", "from_path": "event@x"}, "from_path"),
    ],
)
def test_set_trait_refuses_bad_configs(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        SetTrait.build(config)


# --- copy_trait ----------------------------------------------------------------------------


async def test_copy_trait_copies_a_private_value(make_context: MakeContext) -> None:
    context = make_context()
    action = CopyTrait.build({"source": "event@properties.tags", "target": "profile@data.tags"})
    await action.run({}, context)
    assert context.profile is not None
    assert context.profile["data"]["tags"] == ["x", "y"]
    context.profile["data"]["tags"].append("z")
    assert context.event["properties"]["tags"] == ["x", "y"]
    assert context.profile_changed


async def test_copy_trait_with_a_missing_source_changes_nothing(
    make_context: MakeContext,
) -> None:
    context = make_context()
    action = CopyTrait.build({"source": "event@properties.nope", "target": "profile@traits.x"})
    out = _single(await action.run({"p": 1}, context))
    assert out == Output("payload", {"p": 1})
    assert context.profile is not None
    assert "x" not in context.profile["traits"]
    assert not context.profile_changed
    assert context.effects.logs == [
        ("info", "event@properties.nope holds nothing; profile@traits.x is unchanged")
    ]


async def test_copy_trait_from_the_payload_to_the_payload(make_context: MakeContext) -> None:
    action = CopyTrait.build({"source": "payload@a.b", "target": "payload@c"})
    out = _single(await action.run({"a": {"b": 5}}, make_context()))
    assert out.payload == {"a": {"b": 5}, "c": 5}


@pytest.mark.parametrize(
    "config",
    [
        {"source": "event@properties.x", "target": "event@properties.y"},
        {"source": "nowhere", "target": "profile@traits.y"},
        {"source": "event@properties.x"},
        {"from": "event@properties.x", "to": "profile@traits.y"},
    ],
)
def test_copy_trait_refuses_bad_configs(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        CopyTrait.build(config)


# --- append_trait --------------------------------------------------------------------------


async def test_append_trait_skips_values_already_there(make_context: MakeContext) -> None:
    context = make_context()
    action = AppendTrait.build(
        {"path": "profile@traits.tags", "value": "{{ event.properties.tags }}"}
    )
    await action.run({}, context)
    assert context.profile is not None
    assert context.profile["traits"]["tags"] == ["x", "y"]
    assert context.profile_changed


async def test_append_trait_creates_the_list(make_context: MakeContext) -> None:
    context = make_context()
    action = AppendTrait.build({"path": "profile@traits.products", "value": "sku-1"})
    await action.run({}, context)
    await action.run({}, context)
    assert context.profile is not None
    assert context.profile["traits"]["products"] == ["sku-1"]


async def test_append_trait_tells_json_values_apart(make_context: MakeContext) -> None:
    action = AppendTrait.build({"path": "payload@values", "value": [True, 1, {"a": 1}, {"a": 1}]})
    out = _single(await action.run({"values": [1]}, make_context()))
    assert out.payload == {"values": [1, True, {"a": 1}]}


async def test_append_trait_with_nothing_new_leaves_the_profile_unchanged(
    make_context: MakeContext,
) -> None:
    context = make_context()
    action = AppendTrait.build({"path": "profile@traits.tags", "value": "x"})
    await action.run({}, context)
    assert not context.profile_changed


async def test_append_trait_onto_a_non_list_fails(make_context: MakeContext) -> None:
    action = AppendTrait.build({"path": "profile@traits.name", "value": "x"})
    with pytest.raises(ActionError, match="not a list"):
        await action.run({}, make_context())


def test_append_trait_refuses_bad_configs() -> None:
    with pytest.raises(InvalidPayload, match="value"):
        AppendTrait.build({"path": "profile@traits.tags"})
    with pytest.raises(InvalidPayload, match="name a key inside"):
        AppendTrait.build({"path": "session@properties", "value": 1})
    with pytest.raises(InvalidPayload, match="unknown name"):
        AppendTrait.build({"path": "profile@traits.tags", "value": "{{ memory.x }}"})


# --- delete_trait --------------------------------------------------------------------------


async def test_delete_trait_removes_the_value(make_context: MakeContext) -> None:
    context = make_context()
    await DeleteTrait.build({"path": "profile@traits.coupon"}).run({}, context)
    assert context.profile is not None
    assert "coupon" not in context.profile["traits"]
    assert context.profile["traits"]["name"] == "Ada"
    assert context.profile_changed


async def test_delete_trait_of_nothing_changes_nothing(make_context: MakeContext) -> None:
    context = make_context()
    out = _single(await DeleteTrait.build({"path": "profile@traits.gone"}).run({"p": 1}, context))
    assert out == Output("payload", {"p": 1})
    assert not context.profile_changed


async def test_delete_trait_from_the_payload(make_context: MakeContext) -> None:
    action = DeleteTrait.build({"path": "payload@a.b"})
    out = _single(await action.run({"a": {"b": 1, "c": 2}}, make_context()))
    assert out.payload == {"a": {"c": 2}}


def test_delete_trait_refuses_bad_configs() -> None:
    with pytest.raises(InvalidPayload, match="name a key inside"):
        DeleteTrait.build({"path": "profile@traits"})
    with pytest.raises(InvalidPayload, match="cannot be changed"):
        DeleteTrait.build({"path": "event@properties.x"})


# --- increment_trait -----------------------------------------------------------------------


async def test_increment_trait_adds_one_by_default(make_context: MakeContext) -> None:
    context = make_context()
    await IncrementTrait.build({"path": "profile@stats.orders"}).run({}, context)
    assert context.profile is not None
    assert context.profile["stats"]["orders"] == 4
    assert context.profile_changed


async def test_increment_trait_by_a_negative_float_and_from_missing(
    make_context: MakeContext,
) -> None:
    context = make_context()
    await IncrementTrait.build({"path": "profile@stats.spent", "by": -0.5}).run({}, context)
    await IncrementTrait.build({"path": "profile@stats.visits", "by": 2}).run({}, context)
    assert context.profile is not None
    assert context.profile["stats"] == {"orders": 3, "spent": 10.0, "visits": 2}


async def test_increment_trait_of_a_non_number_fails(make_context: MakeContext) -> None:
    action = IncrementTrait.build({"path": "profile@traits.name"})
    with pytest.raises(ActionError, match="not a number"):
        await action.run({}, make_context())
    flag = IncrementTrait.build({"path": "payload@flag"})
    with pytest.raises(ActionError, match="not a number"):
        await flag.run({"flag": True}, make_context())


async def test_increment_trait_refuses_an_overflow(make_context: MakeContext) -> None:
    action = IncrementTrait.build({"path": "payload@n", "by": 1e308})
    with pytest.raises(ActionError, match="not finite"):
        await action.run({"n": 1e308}, make_context())


@pytest.mark.parametrize(
    "config",
    [
        {"path": "profile@stats.orders", "by": True},
        {"path": "profile@stats.orders", "by": "2"},
        {"path": "profile@stats.orders", "by": float("inf")},
        {"path": "profile@stats.a.b"},
        {"path": "event@properties.price"},
    ],
)
def test_increment_trait_refuses_bad_configs(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        IncrementTrait.build(config)


# --- calculator ----------------------------------------------------------------------------


async def test_calculator_computes_from_paths(make_context: MakeContext) -> None:
    context = make_context()
    action = Calculator.build(
        {
            "expression": "profile@stats.orders * 2 + event@properties.price",
            "target": "profile@stats.score",
        }
    )
    await action.run({}, context)
    assert context.profile is not None
    assert context.profile["stats"]["score"] == 126
    assert context.profile_changed


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("(1 + 2) * 3", 9),
        ("-payload@a + 10", 7),
        ("7 // 2 + 7 % 2", 4),
        ("2 ** 10", 1024),
        ("round(payload@b / 3, 2)", 3.33),
        ("round(2.6)", 3),
        ("abs(-4) + max(1, payload@a, 2) - min(5, 4)", 3),
        ("payload@b / 4", 2.5),
    ],
)
async def test_calculator_arithmetic(
    make_context: MakeContext, expression: str, result: float
) -> None:
    action = Calculator.build({"expression": expression})
    out = _single(await action.run({"a": 3, "b": 10}, make_context()))
    assert out.payload["result"] == result


async def test_calculator_path_keys_are_only_dictionary_keys(make_context: MakeContext) -> None:
    # `__class__` after a root is a key of the payload object, never a Python attribute.
    action = Calculator.build({"expression": "payload@a.__class__ + 1"})
    with pytest.raises(ActionError, match="has no value"):
        await action.run({"a": {}}, make_context())
    out = _single(await action.run({"a": {"__class__": 1}}, make_context()))
    assert out.payload["result"] == 2


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"a": 0}, "division by zero"),
        ({}, "payload@a has no value"),
        ({"a": None}, "payload@a has no value"),
        ({"a": "3"}, "not a number"),
        ({"a": True}, "not a number"),
    ],
)
async def test_calculator_fails_clearly_at_run_time(
    make_context: MakeContext, payload: dict[str, Any], problem: str
) -> None:
    action = Calculator.build({"expression": "10 / payload@a"})
    with pytest.raises(ActionError, match=problem):
        await action.run(payload, make_context())


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("2 ** 5000", "larger than allowed"),
        ("2.0 ** 5000", "larger than allowed"),
        ("10.0 ** 300 * 10.0 ** 300", "not finite or beyond"),
        ("(-8) ** 0.5", "not a real number"),
    ],
)
async def test_calculator_bounds_results(
    make_context: MakeContext, expression: str, problem: str
) -> None:
    action = Calculator.build({"expression": expression})
    with pytest.raises(ActionError, match=problem):
        await action.run({}, make_context())


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("__import__('os').system('x')", "'_'"),
        ("open('f')", "only these functions"),
        ("(1).real", "not arithmetic"),
        ("payload@a + _x", "'_'"),
        ("x + 1", "unknown name 'x'"),
        ("'a' * 3", "not a number"),
        ("True + 1", "not a number"),
        ("1 if 1 else 2", "not arithmetic"),
        ("payload@a < 3", "payload@a < 3"),
        ("1 << 3", "operator"),
        ("~1", "operator"),
        ("[1, 2]", "not arithmetic"),
        ("lambda: 1", "not arithmetic"),
        ("round(1, ndigits=2)", "plain arguments"),
        ("max(1)", "2 to 100 arguments"),
        ("abs(*[1])", "plain arguments"),
        ("1 +", "cannot be read"),
        ("memory@x + 1", "must start with"),
        ("1j", "not a number"),
        ("-" * 60 + "1", "nested more than"),
        ("1 + " * 300 + "1", "longer than"),
    ],
)
def test_calculator_refuses_what_is_not_arithmetic(expression: str, problem: str) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        Calculator.build({"expression": expression})


def test_calculator_refuses_a_bad_target() -> None:
    with pytest.raises(InvalidPayload, match="cannot be changed"):
        Calculator.build({"expression": "1", "target": "event@properties.x"})


# --- regex_match ---------------------------------------------------------------------------


async def test_regex_match_named_groups(make_context: MakeContext) -> None:
    action = RegexMatch.build(
        {
            "pattern": r"^(?P<user>[^@]+)@(?P<domain>.+)$",
            "path": "event@properties.email",
        }
    )
    out = _single(await action.run({"p": 1}, make_context()))
    assert out == Output("true", {"p": 1, "match": {"user": "Ada", "domain": "Example.com"}})


async def test_regex_match_positional_groups_and_ignore_case(make_context: MakeContext) -> None:
    context = make_context()
    action = RegexMatch.build(
        {
            "pattern": r"@(example)\.(com)",
            "path": "event@properties.email",
            "target": "profile@data.email_parts",
            "ignore_case": True,
        }
    )
    out = _single(await action.run({}, context))
    assert out.port == "true"
    assert context.profile is not None
    assert context.profile["data"]["email_parts"] == ["Example", "com"]


async def test_regex_match_without_groups_keeps_the_match(make_context: MakeContext) -> None:
    action = RegexMatch.build({"pattern": r"\d+", "path": "payload@code"})
    out = _single(await action.run({"code": "order-4711-x"}, make_context()))
    assert out.payload["match"] == ["4711"]


async def test_regex_match_false_leaves_the_payload(make_context: MakeContext) -> None:
    action = RegexMatch.build({"pattern": r"^no$", "path": "event@properties.label"})
    assert _single(await action.run({"p": 1}, make_context())) == Output("false", {"p": 1})
    missing = RegexMatch.build({"pattern": "x", "path": "event@properties.none"})
    assert _single(await missing.run({}, make_context())) == Output("false", {})
    number = RegexMatch.build({"pattern": "1", "path": "event@properties.price"})
    assert _single(await number.run({}, make_context())) == Output("false", {})


async def test_regex_match_stops_a_runaway_pattern(make_context: MakeContext) -> None:
    # Exponential backtracking: without the time limit this search would not end in our time.
    action = RegexMatch.build({"pattern": r"(a|aa)+$", "path": "payload@text"})
    with pytest.raises(ActionError, match="took longer than"):
        await action.run({"text": "a" * 60 + "b"}, make_context())


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"pattern": "(unclosed", "path": "payload@x"}, "pattern"),
        ({"pattern": "a" * 1_001, "path": "payload@x"}, "1000"),
        ({"pattern": "", "path": "payload@x"}, "pattern"),
        ({"pattern": "a", "path": "x"}, "must start with"),
        ({"pattern": "a", "path": "payload@x", "target": "event@m"}, "cannot be changed"),
    ],
)
def test_regex_match_refuses_bad_configs(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        RegexMatch.build(config)


# --- parse_url -----------------------------------------------------------------------------


async def test_parse_url_of_the_page(make_context: MakeContext) -> None:
    out = _single(await ParseUrl.build({}).run({"p": 1}, make_context()))
    assert out == Output(
        "payload",
        {
            "p": 1,
            "url": {
                "scheme": "https",
                "host": "shop.example",
                "port": 8443,
                "path": "/cart/view",
                "query": {"tag": ["a", "b"], "q": "", "one": "1"},
                "fragment": "top",
            },
        },
    )


async def test_parse_url_never_copies_credentials(make_context: MakeContext) -> None:
    context = make_context()
    action = ParseUrl.build({"path": "payload@link", "target": "session@context.link"})
    await action.run({"link": "http://user:hunter2@example.com/x"}, context)
    assert context.session is not None
    link = context.session["context"]["link"]
    assert link["host"] == "example.com"
    assert link["port"] is None
    assert "hunter2" not in repr(link)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not a url", "is not a URL"),
        ("/relative/path", "is not a URL"),
        ("http://example.com:99999/", "is not a URL"),
        ("http://[::1/", "is not a URL"),
        (42, "is not a URL"),
    ],
)
async def test_parse_url_of_something_else_fails(
    make_context: MakeContext, value: Any, problem: str
) -> None:
    action = ParseUrl.build({"path": "payload@link"})
    with pytest.raises(ActionError, match=problem):
        await action.run({"link": value}, make_context())


async def test_parse_url_of_nothing_fails(make_context: MakeContext) -> None:
    with pytest.raises(ActionError, match="holds no URL"):
        await ParseUrl.build({"path": "payload@link"}).run({}, make_context())


def test_parse_url_refuses_bad_configs() -> None:
    with pytest.raises(InvalidPayload, match="cannot be changed"):
        ParseUrl.build({"target": "event@context.url"})
    with pytest.raises(InvalidPayload, match="must start with"):
        ParseUrl.build({"path": "url"})
