"""Event processing as pure logic: mapping operations, schema validation, reshaping templates
and their sandbox, built-in event types, and the cached rule lookup."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from tessera.core.reshaping import check_reshape_rule, compile_template, render, reshape
from tessera.errors import InvalidPayload
from tessera.model.common import Ref, new_id
from tessera.model.event import Event, EventMetadata
from tessera.model.processing import (
    FieldMapping,
    MappingOp,
    MappingRule,
    ProcessingRule,
    ReshapeRule,
    ValidationRule,
)
from tessera.model.profile import Profile, new_profile
from tessera.pipeline.builtin_events import BUILTIN_EVENT_TYPES, builtin_mapping_rule
from tessera.pipeline.mapping import MAX_LIST_ITEMS, apply_mappings, check_mapping_rule
from tessera.pipeline.processing import ProcessingRules, RuleSet, check_rule, select_rules
from tessera.pipeline.validation import check_validation_rule, validate_event
from tessera.storage.processing_ports import R

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def mapping_rule(
    *mappings: FieldMapping,
    event_type: str = "test",
    condition: str | None = None,
    name: str = "rule",
    rule_id: str = "m1",
    enabled: bool = True,
) -> MappingRule:
    return MappingRule(
        tenant="default",
        id=rule_id,
        name=name,
        event_type=event_type,
        created=NOW,
        mappings=list(mappings),
        condition=condition,
        enabled=enabled,
    )


def one(
    op: MappingOp,
    profile: str,
    event: str | list[str] | None = None,
    value: Any = None,
) -> MappingRule:
    return mapping_rule(FieldMapping(profile=profile, op=op, event=event, value=value))


def profile_doc() -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(new_profile("p1", "default", NOW))
    return document


def event_doc(event_type: str = "test", **properties: Any) -> dict[str, Any]:
    return {
        "id": "e1",
        "type": event_type,
        "time": "2026-01-02T03:04:05Z",
        "properties": properties,
        "context": {"page": {"url": "https://shop.example/cart"}},
        "source": {"id": "web"},
    }


def run(
    rule: MappingRule, profile: dict[str, Any], **properties: Any
) -> tuple[list[str], list[str]]:
    warnings: list[str] = []
    changed = apply_mappings(event_doc(**properties), profile, [rule], warnings=warnings)
    return changed, warnings


def still_a_profile(document: dict[str, Any]) -> Profile:
    """What ingest does with the document afterwards: it must still convert."""
    return msgspec.convert(document, Profile)


# --- Mapping operations -----------------------------------------------------------------------


def test_equals_creates_nested_path_and_reports_it() -> None:
    profile = profile_doc()
    changed, warnings = run(
        one("equals", "data.contact.email.main", "properties.email"), profile, email="a@b.c"
    )
    assert changed == ["data.contact.email.main"]
    assert warnings == []
    assert profile["data"] == {"contact": {"email": {"main": "a@b.c"}}}
    still_a_profile(profile)


def test_equals_same_value_is_no_change_but_a_new_type_is() -> None:
    profile = profile_doc()
    profile["traits"]["age"] = 30
    rule = one("equals", "traits.age", "properties.age")
    assert run(rule, profile, age=30)[0] == []
    assert run(rule, profile, age=30.0)[0] == ["traits.age"]
    assert profile["traits"]["age"] == 30.0


def test_equals_with_missing_or_null_event_value_changes_nothing() -> None:
    profile = profile_doc()
    profile["traits"]["plan"] = "pro"
    rule = one("equals", "traits.plan", "properties.plan")
    assert run(rule, profile)[0] == []
    assert run(rule, profile, plan=None)[0] == []
    assert profile["traits"]["plan"] == "pro"


def test_equals_uses_the_first_present_alternative_then_the_constant() -> None:
    rule = one("equals", "traits.x", ["properties.a", "properties.b"], value="fallback")
    profile = profile_doc()
    run(rule, profile, b=2)
    assert profile["traits"]["x"] == 2
    run(rule, profile, a=1, b=2)
    assert profile["traits"]["x"] == 1
    run(rule, profile)
    assert profile["traits"]["x"] == "fallback"


def test_equals_if_not_exists_keeps_an_existing_value() -> None:
    profile = profile_doc()
    rule = one("equals_if_not_exists", "traits.first_source", "properties.source")
    assert run(rule, profile, source="ads")[0] == ["traits.first_source"]
    assert run(rule, profile, source="email")[0] == []
    assert profile["traits"]["first_source"] == "ads"
    profile["traits"]["first_source"] = None  # null counts as missing
    assert run(rule, profile, source="email")[0] == ["traits.first_source"]


def test_append_is_distinct_and_accepts_lists() -> None:
    profile = profile_doc()
    rule = one("append", "traits.tags", "properties.tags")
    assert run(rule, profile, tags="a")[0] == ["traits.tags"]
    assert run(rule, profile, tags=["a", "b", "a"])[0] == ["traits.tags"]
    assert run(rule, profile, tags=["b"])[0] == []
    assert profile["traits"]["tags"] == ["a", "b"]


def test_append_treats_1_and_true_as_different_items() -> None:
    profile = profile_doc()
    rule = one("append", "traits.values", "properties.v")
    for value in (1, True, 1.0, 1):
        run(rule, profile, v=value)
    assert profile["traits"]["values"] == [1, True, 1.0]


def test_append_turns_a_single_value_into_a_list_and_refuses_objects() -> None:
    profile = profile_doc()
    profile["traits"]["one"] = "x"
    profile["traits"]["obj"] = {"k": 1}
    assert run(one("append", "traits.one", "properties.v"), profile, v="y")[0] == ["traits.one"]
    assert profile["traits"]["one"] == ["x", "y"]
    changed, warnings = run(one("append", "traits.obj", "properties.v"), profile, v="y")
    assert changed == [] and "is an object" in warnings[0]
    assert profile["traits"]["obj"] == {"k": 1}


def test_append_of_nothing_creates_no_empty_list() -> None:
    profile = profile_doc()
    assert run(one("append", "traits.tags", "properties.tags"), profile, tags=[])[0] == []
    assert "tags" not in profile["traits"]


def test_append_keeps_the_newest_items() -> None:
    profile = profile_doc()
    profile["traits"]["seen"] = list(range(MAX_LIST_ITEMS))
    changed, warnings = run(one("append", "traits.seen", "properties.v"), profile, v="new")
    assert changed == ["traits.seen"] and warnings
    assert len(profile["traits"]["seen"]) == MAX_LIST_ITEMS
    assert profile["traits"]["seen"][-1] == "new" and profile["traits"]["seen"][0] == 1


def test_appended_values_are_copies_not_the_events_own_lists() -> None:
    profile = profile_doc()
    event = event_doc(items=[{"sku": "a"}])
    apply_mappings(event, profile, [one("equals", "traits.items", "properties.items")])
    apply_mappings(
        event_doc(item={"sku": "b"}), profile, [one("append", "traits.items", "properties.item")]
    )
    assert event["properties"]["items"] == [{"sku": "a"}]
    assert profile["traits"]["items"] == [{"sku": "a"}, {"sku": "b"}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), (2.5, 2.5), ("12.50", 12.5), ("7", 7), ("abc", 1), (None, 1), (True, 1), ({}, 1)],
)
def test_increment_by_the_event_value_when_numeric_else_by_one(value: Any, expected: float) -> None:
    profile = profile_doc()
    changed, _ = run(one("increment", "stats.points", "properties.n"), profile, n=value)
    assert changed == ["stats.points"]
    assert profile["stats"]["points"] == expected
    still_a_profile(profile)


def test_increment_adds_to_an_existing_number() -> None:
    profile = profile_doc()
    rule = one("increment", "stats.events_seen")
    run(rule, profile)
    run(rule, profile)
    assert profile["stats"]["events_seen"] == 2


def test_increment_leaves_a_non_numeric_value_alone() -> None:
    profile = profile_doc()
    profile["data"]["count"] = "many"
    profile["data"]["flag"] = True
    for path in ("data.count", "data.flag"):
        changed, warnings = run(one("increment", path, "properties.n"), profile, n=3)
        assert changed == [] and "not a number" in warnings[0]
    assert profile["data"] == {"count": "many", "flag": True}


def test_increment_constant_fallback_zero_changes_nothing() -> None:
    profile = profile_doc()
    rule = one("increment", "stats.ltv", ["properties.total", "properties.value"], value=0)
    assert run(rule, profile)[0] == []
    assert run(rule, profile, total="n/a")[0] == []
    assert "ltv" not in profile["stats"]
    assert run(rule, profile, value=10)[0] == ["stats.ltv"]
    assert profile["stats"]["ltv"] == 10


def test_delete_removes_and_a_missing_path_is_no_change() -> None:
    profile = profile_doc()
    profile["data"]["pii"] = {"name": "Ann"}
    rule = one("delete", "data.pii.name")
    assert run(rule, profile)[0] == ["data.pii.name"]
    assert profile["data"]["pii"] == {}
    assert run(rule, profile) == ([], [])
    assert run(one("delete", "data.nothing.here"), profile) == ([], [])
    assert "nothing" not in profile["data"]  # deleting creates no parents


def test_merge_deep_merges_objects_and_reports_each_changed_key() -> None:
    profile = profile_doc()
    profile["traits"] = {"plan": "free", "address": {"city": "Oslo", "zip": "0150"}}
    changed, _ = run(
        one("merge", "traits", "properties.traits"),
        profile,
        traits={"plan": "pro", "address": {"city": "Bergen"}, "age": 40},
    )
    assert sorted(changed) == ["traits.address.city", "traits.age", "traits.plan"]
    assert profile["traits"] == {
        "plan": "pro",
        "address": {"city": "Bergen", "zip": "0150"},
        "age": 40,
    }


def test_merge_of_a_non_object_is_refused_with_a_warning() -> None:
    profile = profile_doc()
    changed, warnings = run(one("merge", "traits", "properties.traits"), profile, traits="x")
    assert changed == [] and "needs an object" in warnings[0]


def test_path_through_a_non_object_is_left_alone() -> None:
    profile = profile_doc()
    profile["data"]["contact"] = "not an object"
    changed, warnings = run(
        one("equals", "data.contact.email", "properties.email"), profile, email="a@b.c"
    )
    assert changed == []
    assert "data.contact holds a str" in warnings[0]
    assert profile["data"]["contact"] == "not an object"


def test_numbers_only_in_stats_and_interests() -> None:
    profile = profile_doc()
    changed, warnings = run(one("equals", "interests.shoes", "properties.v"), profile, v="lots")
    assert changed == [] and "holds numbers" in warnings[0]
    assert run(one("equals", "interests.shoes", "properties.v"), profile, v="0.5")[0] == [
        "interests.shoes"
    ]
    assert profile["interests"]["shoes"] == 0.5
    assert still_a_profile(profile).interests == {"shoes": 0.5}


def test_placeholder_in_profile_path_is_filled_from_the_event() -> None:
    profile = profile_doc()
    rule = one("equals", "consents.{properties.type}", value={"granted": True})
    assert run(rule, profile, type="marketing")[0] == ["consents.marketing"]
    changed, warnings = run(rule, profile, type="a.b")
    assert changed == [] and "not a key" in warnings[0]
    changed, warnings = run(rule, profile)
    assert changed == [] and "missing" in warnings[0]
    assert profile["consents"] == {"marketing": {"granted": True}}


def test_rules_apply_in_order_and_disabled_ones_not_at_all() -> None:
    profile = profile_doc()
    first = one("equals", "traits.x", value="first")
    second = mapping_rule(FieldMapping(profile="traits.x", value="second"), rule_id="m2")
    off = mapping_rule(FieldMapping(profile="traits.x", value="off"), enabled=False)
    changed = apply_mappings(event_doc(), profile, [first, second, off])
    assert changed == ["traits.x"] and profile["traits"]["x"] == "second"


def test_condition_decides_through_the_seam() -> None:
    seen: list[Mapping[str, Any]] = []

    def holds(text: str, records: Mapping[str, Mapping[str, Any]]) -> bool:
        seen.append(records)
        return text == "yes"

    rules = [
        mapping_rule(FieldMapping(profile="traits.a", value=1), condition="yes"),
        mapping_rule(FieldMapping(profile="traits.b", value=1), condition="no"),
    ]
    profile = profile_doc()
    session = {"id": "s1"}
    changed = apply_mappings(
        event_doc(), profile, rules, session_doc=session, condition_holds=holds
    )
    assert changed == ["traits.a"]
    assert set(seen[0]) == {"event", "profile", "session"}
    assert seen[0]["session"] is session and seen[0]["profile"] is profile


def test_a_condition_that_cannot_be_read_skips_the_rule_with_a_warning() -> None:
    def broken(_text: str, _records: Mapping[str, Mapping[str, Any]]) -> bool:
        raise InvalidPayload("condition: unexpected token at line 1, column 1")

    warnings: list[str] = []
    rule = mapping_rule(FieldMapping(profile="traits.a", value=1), condition="((")
    assert (
        apply_mappings(
            event_doc(), profile_doc(), [rule], condition_holds=broken, warnings=warnings
        )
        == []
    )
    assert "skipped" in warnings[0]


def test_the_real_condition_language() -> None:
    rule = mapping_rule(
        FieldMapping(profile="traits.big_spender", value=True),
        condition="event@properties.total > 100",
    )
    profile = profile_doc()
    assert apply_mappings(event_doc(total=50), profile, [rule]) == []
    assert apply_mappings(event_doc(total=500), profile, [rule]) == ["traits.big_spender"]


def test_value_templates_read_event_session_and_profile() -> None:
    profile = profile_doc()
    profile["traits"]["name"] = "Ann"
    rule = one(
        "equals",
        "data.last",
        value={
            "page": "{{ event.context.page.url }}",
            "who": "{{ profile.traits.name }}",
            "session": "{{ session.id }}",
        },
    )
    apply_mappings(event_doc(), profile, [rule], session_doc={"id": "s9"})
    assert profile["data"]["last"] == {
        "page": "https://shop.example/cart",
        "who": "Ann",
        "session": "s9",
    }


# --- Saving mapping rules: paths and operations ---------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "id",
        "ids",
        "ids.0",
        "metadata.time.insert",
        "segments",
        "active",
        "traits",  # a whole section only with merge
        "data..x",
        "data.",
        "profile.traits.x",
        "data.__class__",
        "data.a b",
        "stats.a.b",
        "interests.a.b",
        "data." + ".".join(["k"] * 20),
    ],
)
def test_forbidden_or_malformed_profile_paths_are_refused_naming_the_mapping(path: str) -> None:
    rule = mapping_rule(
        FieldMapping(profile="traits.ok", event="properties.a"),
        FieldMapping(profile=path, event="properties.a"),
    )
    with pytest.raises(InvalidPayload) as refused:
        check_mapping_rule(rule, check_condition=lambda _text: None)
    assert refused.value.message.startswith(f"mappings[1] ({path!r}):")


@pytest.mark.parametrize(
    ("mapping", "words"),
    [
        (FieldMapping(profile="stats.x", op="append", event="properties.a"), "append"),
        (FieldMapping(profile="stats", op="merge", event="properties.a"), "merge"),
        (FieldMapping(profile="stats.x", op="equals", value="text"), "not one"),
        (FieldMapping(profile="traits.x", op="equals"), "needs 'event'"),
        (FieldMapping(profile="traits.x", op="append", event=[]), "needs 'event'"),
        (FieldMapping(profile="traits.x", event="event.properties.a"), "without an 'event.'"),
        (FieldMapping(profile="traits.x", value="{{ ''.__class__ }}"), "__class__"),
        (FieldMapping(profile="consents.{name}", value=1), "must start with"),
    ],
)
def test_mappings_that_cannot_work_are_refused(mapping: FieldMapping, words: str) -> None:
    with pytest.raises(InvalidPayload) as refused:
        check_mapping_rule(mapping_rule(mapping), check_condition=lambda _text: None)
    assert words in refused.value.message


@pytest.mark.parametrize(
    "path",
    [
        "traits.plan",
        "data.contact.email.main",
        "consents.marketing",
        "interests.shoes",
        "stats.views",
        "consents.{properties.type}",
        "data.by-type.{type}.count",
    ],
)
def test_writable_paths_are_accepted(path: str) -> None:
    check_mapping_rule(
        mapping_rule(
            FieldMapping(
                profile=path, op="increment" if "stats" in path else "equals", event="properties.a"
            )
        ),
        check_condition=lambda _text: None,
    )


def test_merge_into_a_whole_section_and_delete_without_a_value_are_accepted() -> None:
    rule = mapping_rule(
        FieldMapping(profile="traits", op="merge", event="properties.traits"),
        FieldMapping(profile="data.tmp", op="delete"),
        FieldMapping(profile="stats.views", op="increment"),
    )
    check_mapping_rule(rule, check_condition=lambda _text: None)


def test_a_rule_without_mappings_or_with_a_bad_condition_is_refused() -> None:
    with pytest.raises(InvalidPayload, match="at least one"):
        check_mapping_rule(mapping_rule(), check_condition=lambda _text: None)
    with pytest.raises(InvalidPayload, match="condition"):
        check_mapping_rule(
            mapping_rule(FieldMapping(profile="traits.a", value=1), condition="event@ ==")
        )


# --- Validation --------------------------------------------------------------------------------


def validation_rule(
    schema: dict[str, Any], *, version: int = 1, name: str = "needs email", rule_id: str = ""
) -> ValidationRule:
    # Compiled schemas are cached process-wide by (tenant, id, version, created): every test
    # gets its own id, as every stored rule has.
    return ValidationRule(
        tenant="default",
        id=rule_id or new_id(),
        name=name,
        event_type="test",
        json_schema=schema,
        created=NOW,
        version=version,
    )


EMAIL_SCHEMA = {
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "properties": {"email": {"type": "string"}},
            "required": ["email"],
        }
    },
}


async def test_valid_event_has_no_errors() -> None:
    assert await validate_event(event_doc(email="a@b.c"), [validation_rule(EMAIL_SCHEMA)]) == []


async def test_errors_name_the_rule_and_the_path() -> None:
    rule = validation_rule(EMAIL_SCHEMA)
    assert await validate_event(event_doc(email=3), [rule]) == [
        "rule 'needs email': event.properties.email must be string"
    ]
    [missing] = await validate_event(event_doc(), [rule])
    assert "event.properties must contain ['email']" in missing


async def test_every_rule_is_checked_and_contributes_its_error() -> None:
    second = validation_rule({"required": ["nope"]}, name="other")
    errors = await validate_event(event_doc(), [validation_rule(EMAIL_SCHEMA), second])
    assert len(errors) == 2 and "'other'" in errors[1]


async def test_schema_defaults_do_not_write_into_the_event() -> None:
    schema = {"properties": {"properties": {"properties": {"x": {"default": 1}}}}}
    event = event_doc()
    assert await validate_event(event, [validation_rule(schema)]) == []
    assert event["properties"] == {}


async def test_compiled_schema_is_cached_by_version() -> None:
    rule = validation_rule({"required": ["a"]}, version=7)
    assert await validate_event({"a": 1}, [rule]) == []
    changed = msgspec.structs.replace(rule, json_schema={"required": ["b"]})
    # Same id and version: the compiled schema is reused (a change must bump the version).
    assert await validate_event({"a": 1}, [changed]) == []
    bumped = msgspec.structs.replace(changed, version=8)
    assert await validate_event({"a": 1}, [bumped]) != []


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "no-such-type"}, "not a valid JSON Schema"),
        ({"minLength": "x"}, "not a valid JSON Schema"),
        ({"pattern": "("}, "not a valid JSON Schema"),
        ({"$ref": "http://127.0.0.1:9/schema.json"}, "not allowed"),
        ({"properties": {"a": {"$ref": "file:///etc/passwd"}}}, "not allowed"),
    ],
)
def test_invalid_schemas_are_refused_when_saved(schema: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidPayload) as refused:
        check_validation_rule(validation_rule(schema))
    assert words in refused.value.message


async def test_local_references_work() -> None:
    schema = {
        "definitions": {"email": {"type": "string"}},
        "properties": {"properties": {"properties": {"email": {"$ref": "#/definitions/email"}}}},
    }
    rule = validation_rule(schema)
    check_validation_rule(rule)
    assert await validate_event(event_doc(email=1), [rule]) != []


async def test_a_rule_created_again_under_the_same_id_is_compiled_again() -> None:
    first = validation_rule({"required": ["a"]}, rule_id="same")
    assert await validate_event({"a": 1}, [first]) == []
    again = msgspec.structs.replace(
        first, json_schema={"required": ["b"]}, created=datetime(2026, 2, 1, tzinfo=UTC)
    )
    assert await validate_event({"a": 1}, [again]) != []


# --- Reshaping ---------------------------------------------------------------------------------


def reshape_rule(
    properties: dict[str, Any] | None = None, context: dict[str, Any] | None = None
) -> ReshapeRule:
    return ReshapeRule(
        tenant="default",
        id="r1",
        name="shape",
        event_type="test",
        created=NOW,
        properties=properties,
        context=context,
    )


def test_reshaping_replaces_the_named_part_and_keeps_the_other() -> None:
    event = event_doc(user={"mail": "a@b.c", "age": 40}, items=[1, 2])
    warnings: list[str] = []
    properties, context = reshape(
        event,
        {"id": "s1"},
        reshape_rule(
            properties={
                "email": "{{ event.properties.user.mail }}",
                "age": "{{ event.properties.user.age }}",
                "items": "{{ event.properties.items }}",
                "label": "user {{ event.properties.user.mail | upper }}",
                "session": "{{ session.id }}",
                "constant": 42,
                "nested": {"url": "{{ event.context.page.url }}"},
                "missing": "{{ event.properties.nope.deeper }}",
            }
        ),
        warnings=warnings,
    )
    assert properties == {
        "email": "a@b.c",
        "age": 40,  # a value, not its text
        "items": [1, 2],
        "label": "user A@B.C",
        "session": "s1",
        "constant": 42,
        "nested": {"url": "https://shop.example/cart"},
        "missing": None,
    }
    assert context == event["context"] and context is not event["context"]
    assert warnings == []


def test_reshaped_values_are_copies() -> None:
    event = event_doc(items=[1])
    properties, _ = reshape(
        event, None, reshape_rule(properties={"i": "{{ event.properties.items }}"})
    )
    properties["i"].append(2)
    assert event["properties"]["items"] == [1]


def test_keys_that_shadow_dict_methods_read_the_data() -> None:
    scope = {"event": event_doc(items=[1], keys="k")}
    assert render("{{ event.properties.items }}", scope, [], "v") == [1]
    assert render("{{ event.properties.keys | upper }}", scope, [], "v") == "K"


def test_a_template_failing_at_run_time_gives_null_and_a_warning() -> None:
    warnings: list[str] = []
    properties, _ = reshape(
        event_doc(n="x"),
        None,
        reshape_rule(properties={"n": "{{ event.properties.n + 1 }}"}),
        warnings=warnings,
    )
    assert properties == {"n": None}
    assert warnings and warnings[0].startswith("reshaping 'shape': properties.n: template")


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ event.__class__ }}",
        "{{ event['__class__'] }}",
        "{{ event.properties.x.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ lipsum.__globals__ }}",
        "{{ range(10) }}",
        "{{ config }}",
        "{{ self }}",
        "{{ event | attr('__class__') }}",
        "{{ event.properties.x | format }}",
        "{{ event.properties.x.center(100000000) }}",
        "{{ 'a'.format(1) }}",
        "{% for x in event %}{{ x }}{% endfor %}",
        "{% set x = 1 %}",
        "{{ [event] | map(attribute='__class__') | list }}",
        "{{ event.properties.x ~ event.properties.x }}" + " " * 1000,
        "{{ event.properties.x",
    ],
)
def test_sandbox_escapes_and_unsafe_templates_are_refused_when_saved(template: str) -> None:
    with pytest.raises(InvalidPayload):
        check_reshape_rule(reshape_rule(properties={"x": template}))
    # And should one be stored anyway, running it yields null and a warning, not a result.
    warnings: list[str] = []
    assert render(template, {"event": event_doc(x="y")}, warnings, "x") is None
    assert warnings


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'a' * 100000000 }}",
        "{{ event.properties.s * 100000000 }}",
        "{{ [1] * 100000000 }}",
        "{{ 2 ** 100000000 }}",
        "{{ event.properties.n ** 100000000 }}",
        "{{ '%0999999999d' % 1 }}",
    ],
)
def test_resource_and_attribute_abuse_fails_at_run_time_without_raising(template: str) -> None:
    compile_template(template)  # nothing to see before it runs
    warnings: list[str] = []
    assert render(template, {"event": event_doc(s="ab", n=7)}, warnings, "x") is None
    assert "failed" in warnings[0]


def test_a_dotted_path_reads_data_only() -> None:
    # The whole-string path form never touches Python attributes: a key that is not there
    # (even a method's name) is simply missing.
    scope = {"event": event_doc(s="ab")}
    for template in ("{{ event.properties.s._x }}", "{{ event.properties.s.upper }}"):
        warnings: list[str] = []
        assert render(template, scope, warnings, "x") is None and warnings == []


def test_reshaping_rule_must_name_a_part_and_only_known_roots() -> None:
    with pytest.raises(InvalidPayload, match="needs 'properties', 'context'"):
        check_reshape_rule(reshape_rule())
    with pytest.raises(InvalidPayload, match="unknown name 'profile'"):
        check_reshape_rule(reshape_rule(context={"p": "{{ profile.traits }}"}))
    check_reshape_rule(reshape_rule(context={"p": "{{ session.id }}", "plain": "text"}))


def test_templates_are_compiled_once() -> None:
    assert compile_template("{{ event.type | upper }}") is compile_template(
        "{{ event.type | upper }}"
    )


# --- Built-in event types ----------------------------------------------------------------------


def builtin(event_type: str, **properties: Any) -> tuple[dict[str, Any], list[str], list[str]]:
    rule = builtin_mapping_rule(event_type)
    assert rule is not None
    profile = profile_doc()
    warnings: list[str] = []
    changed = apply_mappings(
        event_doc(event_type, **properties), profile, [rule], warnings=warnings
    )
    still_a_profile(profile)
    return profile, changed, warnings


def test_every_builtin_mapping_passes_the_save_time_check() -> None:
    for event_type in BUILTIN_EVENT_TYPES:
        rule = builtin_mapping_rule(event_type.type)
        assert rule is not None
        check_mapping_rule(rule)
    assert builtin_mapping_rule("no-such-type") is None


@pytest.mark.parametrize("event_type", ["identify", "sign-in", "sign-up"])
def test_identity_events_fill_contact_identifier_pii_and_traits(event_type: str) -> None:
    profile, changed, warnings = builtin(
        event_type,
        email="ann@example.com",
        phone="+4712345678",
        customer_id="c-1",
        first_name="Ann",
        last_name="Lee",
        traits={"plan": "pro"},
    )
    assert profile["data"] == {
        "contact": {"email": {"main": "ann@example.com"}, "phone": {"main": "+4712345678"}},
        "identifier": {"id": "c-1"},
        "pii": {"first_name": "Ann", "last_name": "Lee"},
    }
    assert profile["traits"] == {"plan": "pro"}
    assert "data.contact.email.main" in changed and "traits.plan" in changed
    assert warnings == []


def test_identify_with_nothing_changes_nothing() -> None:
    assert builtin("identify")[1:] == ([], [])


def test_page_view_and_add_to_cart_count() -> None:
    assert builtin("page-view")[0]["stats"]["views"] == 1
    assert builtin("add-to-cart", sku="x")[0]["stats"]["cart_additions"] == 1


@pytest.mark.parametrize("event_type", ["purchase", "order-completed"])
def test_purchase_adds_value_counts_orders_and_keeps_the_time(event_type: str) -> None:
    profile, changed, _ = builtin(event_type, value="19.90", revenue=5, order_id="o-7")
    assert profile["stats"]["ltv"] == 19.9  # value, since total is missing
    assert profile["stats"]["orders"] == 1
    assert profile["data"]["purchases"] == {
        "last_time": "2026-01-02T03:04:05Z",
        "last_order_id": "o-7",
    }
    assert "stats.ltv" in changed


def test_purchase_without_an_amount_is_an_order_but_adds_no_value() -> None:
    profile, _, _ = builtin("purchase")
    assert profile["stats"]["orders"] == 1 and "ltv" not in profile["stats"]


@pytest.mark.parametrize(
    ("event_type", "granted"), [("consent-granted", True), ("consent-revoked", False)]
)
def test_consents(event_type: str, granted: bool) -> None:
    profile, changed, _ = builtin(event_type, type="marketing")
    assert profile["consents"] == {
        "marketing": {"granted": granted, "time": "2026-01-02T03:04:05Z"}
    }
    assert changed == ["consents.marketing"]
    _, changed, warnings = builtin(event_type)
    assert changed == [] and "properties.type" in warnings[0]


# --- Choosing rules, and the cached lookup ---------------------------------------------------


def test_select_rules_per_source() -> None:
    any_source = reshape_rule(properties={"a": 1})
    own = msgspec.structs.replace(any_source, id="r2", source_id="web")
    other = msgspec.structs.replace(any_source, id="r3", source_id="app")
    valid_any = validation_rule({}, rule_id="v1")
    valid_other = msgspec.structs.replace(valid_any, id="v2", source_id="app")
    custom = mapping_rule(FieldMapping(profile="traits.a", value=1), event_type="page-view")
    rules: list[ProcessingRule] = [any_source, own, other, valid_any, valid_other, custom]
    for_web = select_rules(
        [msgspec.structs.replace(r, event_type="page-view") for r in rules], "page-view", "web"
    )
    assert for_web.reshaping is not None and for_web.reshaping.id == "r2"
    assert [rule.id for rule in for_web.validation] == ["v1"]
    assert [rule.id for rule in for_web.mapping] == ["builtin:page-view", "m1"]
    elsewhere = select_rules(
        [msgspec.structs.replace(r, event_type="page-view") for r in rules], "page-view", "mobile"
    )
    assert elsewhere.reshaping is not None and elsewhere.reshaping.id == "r1"
    assert select_rules([], "unknown", "web") == RuleSet()
    assert RuleSet().empty


class CountingStore:
    """An in-memory rule store that counts the queries the ingest path would make."""

    def __init__(self, rules: list[ProcessingRule]) -> None:
        self.rules = rules
        self.queries = 0
        self.gate: asyncio.Event | None = None

    async def for_event_type(self, tenant: str, event_type: str) -> builtins.list[ProcessingRule]:
        self.queries += 1
        # Read first, then wait: like a query whose answer travels while the rules change.
        found = [
            r for r in self.rules if r.tenant == tenant and r.event_type == event_type and r.enabled
        ]
        if self.gate is not None:
            await self.gate.wait()
        return found

    async def get(self, tenant: str, kind: type[R], rule_id: str) -> R | None:
        raise NotImplementedError

    async def save(self, rule: ProcessingRule) -> None:
        raise NotImplementedError

    async def delete(self, tenant: str, kind: type[ProcessingRule], rule_id: str) -> bool:
        raise NotImplementedError

    async def list(
        self, tenant: str, kind: type[R], *, event_type: str | None = None
    ) -> builtins.list[R]:
        raise NotImplementedError


async def test_lookup_is_cached_per_type_and_forget_reloads() -> None:
    store = CountingStore([mapping_rule(FieldMapping(profile="traits.a", value=1))])
    rules = ProcessingRules(store, ttl_s=60)
    first = await rules.for_event("default", "web", "test")
    assert [r.id for r in first.mapping] == ["m1"]
    await rules.for_event("default", "web", "test")
    await rules.for_event("default", "app", "test")  # another source: same query result
    assert store.queries == 1
    store.rules = []
    assert (await rules.for_event("default", "web", "test")).mapping == first.mapping
    rules.forget("default")
    assert (await rules.for_event("default", "web", "test")).empty
    assert store.queries == 2


async def test_lookup_expires_after_ttl() -> None:
    store = CountingStore([])
    rules = ProcessingRules(store, ttl_s=0)
    await rules.for_event("default", "web", "test")
    await rules.for_event("default", "web", "test")
    assert store.queries == 2


async def test_concurrent_first_lookups_share_one_query() -> None:
    store = CountingStore([])
    store.gate = asyncio.Event()
    rules = ProcessingRules(store, ttl_s=60)
    waiting = [asyncio.create_task(rules.for_event("default", "web", "test")) for _ in range(20)]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*waiting)
    assert store.queries == 1 and all(result.empty for result in results)


async def test_a_change_during_a_load_is_not_hidden_by_its_result() -> None:
    store = CountingStore([])
    store.gate = asyncio.Event()
    rules = ProcessingRules(store, ttl_s=60)
    loading = asyncio.create_task(rules.for_event("default", "web", "test"))
    while store.queries == 0:
        await asyncio.sleep(0)
    store.rules = [mapping_rule(FieldMapping(profile="traits.a", value=1))]
    rules.forget("default")
    store.gate.set()
    assert (await loading).empty  # what was read before the change
    assert not (await rules.for_event("default", "web", "test")).empty


def stored_event(event_type: str, **properties: Any) -> Event:
    return Event(
        id="e1",
        tenant="default",
        type=event_type,
        time=NOW,
        metadata=EventMetadata(insert=NOW),
        source=Ref("web"),
        session=Ref("s1"),
        profile=Ref("p1"),
        properties=properties,
    )


async def test_process_validates_reshapes_and_maps_in_order() -> None:
    reshaping = msgspec.structs.replace(
        reshape_rule(properties={"email": "{{ event.properties.user.email }}"}),
        event_type="sign-in",
    )
    validation = msgspec.structs.replace(
        validation_rule({"properties": {"properties": {"required": ["user"]}}}),
        event_type="sign-in",
    )
    rules = ProcessingRules(CountingStore([validation, reshaping]), ttl_s=60)
    profile = profile_doc()
    good = stored_event("sign-in", user={"email": "ann@example.com"})
    bad = stored_event("sign-in", email="bob@example.com")
    warnings = await rules.process([good, bad], profile, {"id": "s1"})

    assert good.properties == {"email": "ann@example.com"} and good.metadata.valid
    assert profile["data"]["contact"]["email"]["main"] == "ann@example.com"
    assert not bad.metadata.valid and bad.metadata.status == "invalid"
    assert bad.metadata.errors == [
        "rule 'needs email': event.properties must contain ['user'] properties"
    ]
    assert warnings == [f"event e1 (sign-in): invalid, not processed: {bad.metadata.errors[0]}"]
    still_a_profile(profile)


async def test_process_leaves_events_of_types_without_rules_alone() -> None:
    rules = ProcessingRules(CountingStore([]), ttl_s=60)
    event = stored_event("custom-thing", a=1)
    profile = profile_doc()
    before = msgspec.to_builtins(profile)
    assert await rules.process([event], profile, {}) == []
    assert profile == before and event.properties == {"a": 1}


def test_check_rule_dispatches_by_kind() -> None:
    with pytest.raises(InvalidPayload, match="JSON Schema"):
        check_rule(validation_rule({"type": 5}))
    with pytest.raises(InvalidPayload, match="needs 'properties'"):
        check_rule(reshape_rule())
    with pytest.raises(InvalidPayload, match="not writable"):
        check_rule(one("equals", "metadata.x", "properties.a"))
