"""The built-in actions that change profiles and sessions, hide values, handle dates, emit
events and wait: each is built from a raw configuration and run against real documents."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import tessera.storage.sql.memory  # noqa: F401  (registers the kv_memory table)
from tessera.errors import InvalidPayload
from tessera.workflow.action import (
    ActionContext,
    ActionError,
    ActionServices,
    EmittedEvent,
    Output,
    Suspend,
)
from tessera.workflow.actions.consents import AddConsent, RequireConsents
from tessera.workflow.actions.datetime_ops import DatetimeOperation
from tessera.workflow.actions.delay import Delay
from tessera.workflow.actions.events import EmitEvent
from tessera.workflow.actions.hashing import HashFields, MaskFields
from tessera.workflow.actions.identity import MergeProfiles
from tessera.workflow.actions.interests import AddInterest, DecreaseInterest, IncreaseInterest
from tessera.workflow.actions.segments import AddSegment, RemoveSegment
from tessera.workflow.actions.session import UpdateSession
from tessera.workflow.registry import default_registry

NOW = datetime(2024, 5, 15, 10, 30, tzinfo=UTC)  # a Wednesday

MakeContext = Callable[..., ActionContext]


@pytest.fixture
def make_context(services: ActionServices) -> MakeContext:
    def make(
        *,
        event: dict[str, Any] | None = None,
        profile: dict[str, Any] | None = None,
        session: dict[str, Any] | None = None,
        no_profile: bool = False,
        no_session: bool = False,
    ) -> ActionContext:
        return ActionContext(
            tenant="default",
            event=event if event is not None else {"type": "page-view", "properties": {}},
            profile=None
            if no_profile
            else (
                profile
                if profile is not None
                else {"id": "p1", "traits": {}, "data": {}, "segments": [], "interests": {}}
            ),
            session=None if no_session else (session if session is not None else {"id": "s1"}),
            now=NOW,
            services=services,
        )

    return make


def output(result: Any) -> Output:
    assert isinstance(result, Output)
    return result


# --- registry ----------------------------------------------------------------------------------


def test_registry_lists_these_actions() -> None:
    names = set(default_registry(plugins=False).names())
    assert {
        "hash_fields",
        "mask_fields",
        "datetime_operation",
        "add_segment",
        "remove_segment",
        "add_interest",
        "increase_interest",
        "decrease_interest",
        "add_consent",
        "require_consents",
        "merge_profiles",
        "update_session",
        "emit_event",
        "delay",
    } <= names


# --- hashing -----------------------------------------------------------------------------------


async def test_hash_fields_replaces_values_by_their_digest(make_context: MakeContext) -> None:
    context = make_context(profile={"data": {"contact": {"email": {"main": "jane@example.com"}}}})
    action = HashFields.build(
        {"paths": ["profile@data.contact.email.main", "payload@ids", "payload@absent"]}
    )
    result = output(await action.run({"ids": ["a", 7], "keep": "x"}, context))
    assert result.port == "payload"
    assert result.payload == {
        "ids": [hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"7").hexdigest()],
        "keep": "x",
    }
    assert context.profile is not None
    assert context.profile["data"]["contact"]["email"]["main"] == (
        hashlib.sha256(b"jane@example.com").hexdigest()
    )
    assert context.profile_changed


async def test_hash_fields_with_salt_is_a_keyed_hmac(make_context: MakeContext) -> None:
    action = HashFields.build({"paths": ["payload@v"], "algorithm": "md5", "salt": "s3cret"})
    result = output(await action.run({"v": "value"}, make_context()))
    assert result.payload == {"v": hmac.new(b"s3cret", b"value", "md5").hexdigest()}
    assert result.payload["v"] != hashlib.md5(b"value").hexdigest()


async def test_hash_fields_refuses_an_object(make_context: MakeContext) -> None:
    action = HashFields.build({"paths": ["payload@v"]})
    with pytest.raises(ActionError, match="payload@v"):
        await action.run({"v": {"a": 1}}, make_context())


@pytest.mark.parametrize(
    "config",
    [
        {"paths": []},
        {"paths": ["event@properties.email"]},
        {"paths": ["profile@interests.bikes"]},
        {"paths": ["profile@segments"]},
        {"paths": ["payload@v"], "algorithm": "crc32"},
        {"paths": ["payload@v"], "salt": ""},
        {"paths": ["payload@v"], "unknown": 1},
    ],
)
def test_hash_fields_bad_config(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        HashFields.build(config)


async def test_mask_fields_keeps_first_and_last(make_context: MakeContext) -> None:
    action = MaskFields.build({"paths": ["payload@email", "payload@pin", "payload@phone"]})
    result = output(
        await action.run({"email": "jane@example.com", "pin": "12", "phone": 48123}, make_context())
    )
    assert result.payload == {"email": "j" + "*" * 14 + "m", "pin": "**", "phone": "4***3"}


async def test_mask_fields_can_keep_the_email_domain(make_context: MakeContext) -> None:
    session: dict[str, Any] = {"id": "s1", "properties": {"email": "jane@example.com"}}
    context = make_context(session=session)
    action = MaskFields.build(
        {
            "paths": ["session@properties.email"],
            "email_domain": True,
            "keep_start": 2,
            "keep_end": 0,
            "mask_char": "#",
        }
    )
    output(await action.run({}, context))
    assert session["properties"]["email"] == "ja##@example.com"
    assert context.session_changed


@pytest.mark.parametrize(
    "config",
    [
        {"paths": ["payload@v"], "mask_char": "**"},
        {"paths": ["payload@v"], "mask_char": ""},
        {"paths": ["payload@v"], "keep_start": -1},
        {"paths": ["session@id"]},
        {"paths": ["nowhere"]},
    ],
)
def test_mask_fields_bad_config(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        MaskFields.build(config)


# --- dates -------------------------------------------------------------------------------------


async def run_datetime(
    make_context: MakeContext, config: dict[str, Any], payload: Any = None
) -> Any:
    action = DatetimeOperation.build(config)
    result = output(await action.run(payload if payload is not None else {}, make_context()))
    assert result.port == "payload"
    return result.payload


async def test_datetime_add_to_now_and_subtract_from_epoch(make_context: MakeContext) -> None:
    added = await run_datetime(make_context, {"operation": "add", "amount": 2, "unit": "hours"})
    assert added == {"datetime": "2024-05-15T12:30:00+00:00"}
    subtracted = await run_datetime(
        make_context,
        {
            "path": "payload@at",
            "operation": "subtract",
            "amount": 1,
            "unit": "weeks",
            "target": "payload@week_before",
        },
        {"at": 1_715_769_000_000},  # milliseconds: 2024-05-15T10:30:00Z
    )
    assert subtracted["week_before"] == "2024-05-08T10:30:00+00:00"


async def test_datetime_days_keep_the_wall_clock_across_dst(make_context: MakeContext) -> None:
    # Warsaw moves its clocks forward on 2024-03-31: a day later is still 09:00 local time.
    result = await run_datetime(
        make_context,
        {
            "path": "payload@at",
            "operation": "add",
            "amount": 1,
            "unit": "days",
            "timezone": "Europe/Warsaw",
        },
        {"at": "2024-03-30T09:00:00"},
    )
    assert result["datetime"] == "2024-03-31T09:00:00+02:00"


async def test_datetime_format_in_a_timezone(make_context: MakeContext) -> None:
    result = await run_datetime(
        make_context,
        {"operation": "format", "format": "%Y-%m-%d %H:%M %A", "timezone": "America/New_York"},
    )
    assert result["datetime"] == "2024-05-15 06:30 Wednesday"


async def test_datetime_difference_in_days(make_context: MakeContext) -> None:
    context = make_context(profile={"traits": {"since": "2024-05-01T10:30:00Z"}})
    action = DatetimeOperation.build(
        {
            "path": "profile@traits.since",
            "operation": "difference",
            "unit": "days",
            "target": "profile@traits.days_since",
        }
    )
    output(await action.run({}, context))
    assert context.profile is not None
    assert context.profile["traits"]["days_since"] == 14.0
    assert context.profile_changed


async def test_datetime_difference_to_another_path(make_context: MakeContext) -> None:
    result = await run_datetime(
        make_context,
        {
            "path": "payload@a",
            "other_path": "payload@b",
            "operation": "difference",
            "unit": "minutes",
        },
        {"a": "2024-01-01T12:00:00+00:00", "b": "2024-01-01T11:30:00+00:00"},
    )
    assert result["datetime"] == -30.0


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        ("hour", "2024-05-15T12:00:00+02:00"),
        ("day", "2024-05-15T00:00:00+02:00"),
        ("week", "2024-05-13T00:00:00+02:00"),
        ("month", "2024-05-01T00:00:00+02:00"),
        ("year", "2024-01-01T00:00:00+01:00"),
    ],
)
async def test_datetime_start_of(make_context: MakeContext, period: str, expected: str) -> None:
    result = await run_datetime(
        make_context,
        {"operation": "start_of", "period": period, "timezone": "Europe/Warsaw"},
    )
    assert result["datetime"] == expected


async def test_datetime_weekday_and_timestamp(make_context: MakeContext) -> None:
    weekday = await run_datetime(
        make_context,
        {"path": "payload@d", "operation": "weekday"},
        {"d": "2024-05-19"},
    )
    assert weekday["datetime"] == 7  # a Sunday
    stamp = await run_datetime(make_context, {"operation": "timestamp"})
    assert stamp["datetime"] == 1_715_769_000
    assert datetime.fromtimestamp(stamp["datetime"], UTC) == NOW


async def test_datetime_reads_the_event(make_context: MakeContext) -> None:
    context = make_context(event={"properties": {"at": "2024-02-28T23:00:00+00:00"}})
    action = DatetimeOperation.build(
        {"path": "event@properties.at", "operation": "add", "amount": 1, "unit": "days"}
    )
    result = output(await action.run({}, context))
    assert result.payload == {"datetime": "2024-02-29T23:00:00+00:00"}


@pytest.mark.parametrize("value", ["not a date", {"a": 1}, True, None])
async def test_datetime_unreadable_value_stops_the_run(
    make_context: MakeContext, value: Any
) -> None:
    action = DatetimeOperation.build({"path": "payload@d", "operation": "weekday"})
    with pytest.raises(ActionError, match="payload@d"):
        await action.run({"d": value}, make_context())


async def test_datetime_out_of_range_stops_the_run(make_context: MakeContext) -> None:
    action = DatetimeOperation.build(
        {"path": "payload@d", "operation": "add", "amount": 1e9, "unit": "weeks"}
    )
    with pytest.raises(ActionError):
        await action.run({"d": "2024-01-01"}, make_context())


@pytest.mark.parametrize(
    "config",
    [
        {"operation": "add"},
        {"operation": "format"},
        {"operation": "start_of"},
        {"operation": "start_of", "period": "decade"},
        {"operation": "explode"},
        {"operation": "weekday", "timezone": "Mars/Olympus"},
        {"operation": "weekday", "timezone": "../etc/passwd"},
        {"operation": "weekday", "target": "event@properties.x"},
        {"operation": "weekday", "path": "somewhere"},
        {"operation": "difference", "other_path": "profile"},
        {"operation": "add", "amount": float("inf")},
    ],
)
def test_datetime_bad_config(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        DatetimeOperation.build(config)


# --- segments ----------------------------------------------------------------------------------


async def test_add_segment_once_and_sorted(make_context: MakeContext) -> None:
    profile: dict[str, Any] = {"segments": ["vip"]}
    context = make_context(profile=profile)
    result = output(await AddSegment.build({"segment": "buyers"}).run({"x": 1}, context))
    assert result == Output("payload", {"x": 1})
    assert profile["segments"] == ["buyers", "vip"]
    assert context.profile_changed
    again = make_context(profile=profile)
    await AddSegment.build({"segment": "vip"}).run({}, again)
    assert profile["segments"] == ["buyers", "vip"]
    assert not again.profile_changed


async def test_add_segment_to_a_profile_without_segments(make_context: MakeContext) -> None:
    profile: dict[str, Any] = {"id": "p"}
    await AddSegment.build({"segment": "new.ones"}).run({}, make_context(profile=profile))
    assert profile["segments"] == ["new.ones"]


async def test_remove_segment(make_context: MakeContext) -> None:
    profile: dict[str, Any] = {"segments": ["buyers", "vip"]}
    context = make_context(profile=profile)
    output(await RemoveSegment.build({"segment": "vip"}).run({}, context))
    assert profile["segments"] == ["buyers"]
    assert context.profile_changed
    untouched = make_context(profile=profile)
    await RemoveSegment.build({"segment": "absent"}).run({}, untouched)
    assert profile["segments"] == ["buyers"]
    assert not untouched.profile_changed


async def test_segments_need_a_profile(make_context: MakeContext) -> None:
    with pytest.raises(ActionError, match="no profile"):
        await AddSegment.build({"segment": "vip"}).run({}, make_context(no_profile=True))


@pytest.mark.parametrize(
    "config", [{}, {"segment": ""}, {"segment": "a b"}, {"segment": "x" * 129}]
)
def test_segment_bad_config(config: dict[str, Any]) -> None:
    for action in (AddSegment, RemoveSegment):
        with pytest.raises(InvalidPayload):
            action.build(config)


# --- interests ---------------------------------------------------------------------------------


async def test_add_interest_sets_the_value(make_context: MakeContext) -> None:
    profile: dict[str, Any] = {"interests": {"bikes": 5}}
    context = make_context(profile=profile)
    await AddInterest.build({"interest": "bikes"}).run({}, context)
    await AddInterest.build({"interest": "cars", "value": 2.5}).run({}, context)
    assert profile["interests"] == {"bikes": 1.0, "cars": 2.5}
    assert context.profile_changed


async def test_increase_and_decrease_interest(make_context: MakeContext) -> None:
    profile: dict[str, Any] = {"interests": {"bikes": 2}}
    context = make_context(profile=profile)
    result = output(await IncreaseInterest.build({"interest": "bikes"}).run({"p": 1}, context))
    assert result.payload == {"p": 1}
    await IncreaseInterest.build({"interest": "new_one", "value": 0.5}).run({}, context)
    await DecreaseInterest.build({"interest": "gone-ones", "value": 3}).run({}, context)
    assert profile["interests"] == {"bikes": 3.0, "new_one": 0.5, "gone-ones": -3.0}


async def test_interests_need_a_profile(make_context: MakeContext) -> None:
    with pytest.raises(ActionError):
        await IncreaseInterest.build({"interest": "x"}).run({}, make_context(no_profile=True))


@pytest.mark.parametrize(
    ("action", "config"),
    [
        (AddInterest, {}),
        (AddInterest, {"interest": "a.b"}),
        (AddInterest, {"interest": "bikes", "value": "lots"}),
        (AddInterest, {"interest": "bikes", "value": float("nan")}),
        (AddInterest, {"interest": "bikes", "value": 1e13}),
        (IncreaseInterest, {"interest": "bikes", "value": 0}),
        (DecreaseInterest, {"interest": "bikes", "value": -1}),
    ],
)
def test_interest_bad_config(action: Any, config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        action.build(config)


# --- consents ----------------------------------------------------------------------------------


async def test_add_consent_records_answer_and_time(make_context: MakeContext) -> None:
    profile: dict[str, Any] = {"consents": {"other": {"granted": True, "time": "x"}}}
    context = make_context(profile=profile)
    output(await AddConsent.build({"consent": "marketing-email"}).run({}, context))
    await AddConsent.build({"consent": "profiling", "granted": False}).run({}, context)
    assert profile["consents"] == {
        "other": {"granted": True, "time": "x"},
        "marketing-email": {"granted": True, "time": "2024-05-15T10:30:00+00:00"},
        "profiling": {"granted": False, "time": "2024-05-15T10:30:00+00:00"},
    }
    assert context.profile_changed


async def test_add_consent_needs_a_profile(make_context: MakeContext) -> None:
    with pytest.raises(ActionError):
        await AddConsent.build({"consent": "a"}).run({}, make_context(no_profile=True))


async def test_require_consents_all_and_any(make_context: MakeContext) -> None:
    profile = {
        "consents": {
            "email": {"granted": True, "time": "t"},
            "sms": {"granted": False, "time": "t"},
        }
    }
    context = make_context(profile=profile)

    async def port(config: dict[str, Any]) -> str:
        result = output(await RequireConsents.build(config).run({"kept": 1}, context))
        assert result.payload == {"kept": 1}
        return result.port

    assert await port({"consents": ["email"]}) == "true"
    assert await port({"consents": ["email", "sms"]}) == "false"
    assert await port({"consents": ["email", "absent"]}) == "false"
    assert await port({"consents": ["sms", "email"], "require_all": False}) == "true"
    assert await port({"consents": ["sms", "absent"], "require_all": False}) == "false"
    assert not context.profile_changed


async def test_require_consents_without_profile_is_false(make_context: MakeContext) -> None:
    action = RequireConsents.build({"consents": ["email"]})
    result = output(await action.run({}, make_context(no_profile=True)))
    assert result.port == "false"


@pytest.mark.parametrize(
    ("action", "config"),
    [
        (AddConsent, {}),
        (AddConsent, {"consent": "Marketing"}),
        (AddConsent, {"consent": "a.b"}),
        (AddConsent, {"consent": "a", "granted": "maybe"}),
        (RequireConsents, {"consents": []}),
        (RequireConsents, {"consents": ["ok", "-bad"]}),
    ],
)
def test_consent_bad_config(action: Any, config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        action.build(config)


# --- identity ----------------------------------------------------------------------------------


async def test_merge_profiles_asks_the_engine_to_merge(make_context: MakeContext) -> None:
    context = make_context()
    context.effects.merge_on.append("data.contact.email.main")
    action = MergeProfiles.build(
        {"paths": ["profile@data.contact.email.main", "traits.customer_id", "traits.customer_id"]}
    )
    result = output(await action.run({"p": 1}, context))
    assert result == Output("payload", {"p": 1})
    assert context.effects.merge_on == ["data.contact.email.main", "traits.customer_id"]
    assert not context.profile_changed


async def test_merge_profiles_needs_a_profile(make_context: MakeContext) -> None:
    action = MergeProfiles.build({"paths": ["data.contact.email.main"]})
    with pytest.raises(ActionError):
        await action.run({}, make_context(no_profile=True))


@pytest.mark.parametrize(
    "paths",
    [[], ["segments"], ["data"], ["event@properties.email"], ["data..x"], ["stats.visits"]],
)
def test_merge_profiles_bad_config(paths: list[str]) -> None:
    with pytest.raises(InvalidPayload):
        MergeProfiles.build({"paths": paths})


# --- session -----------------------------------------------------------------------------------


async def test_update_session_writes_rendered_properties(make_context: MakeContext) -> None:
    session: dict[str, Any] = {"id": "s1", "properties": {"old": 1}}
    context = make_context(
        event={"properties": {"campaign": "spring"}},
        profile={"traits": {"name": "Jane"}},
        session=session,
    )
    action = UpdateSession.build(
        {
            "properties": {
                "campaign": "{{ event.properties.campaign }}",
                "utm.source": "newsletter",
                "greeting": "Hi {{ profile.traits.name }} ({{ payload.n * 2 }})",
                "broken": "{{ payload.n.x.y + 1 }}",
            }
        }
    )
    result = output(await action.run({"n": 21}, context))
    assert result.payload == {"n": 21}
    assert session["properties"] == {
        "old": 1,
        "campaign": "spring",
        "utm": {"source": "newsletter"},
        "greeting": "Hi Jane (42)",
        "broken": None,
    }
    assert context.session_changed
    assert [level for level, _ in context.effects.logs] == ["warning"]


async def test_update_session_needs_a_session(make_context: MakeContext) -> None:
    action = UpdateSession.build({"properties": {"a": 1}})
    with pytest.raises(ActionError, match="no session"):
        await action.run({}, make_context(no_session=True))


@pytest.mark.parametrize(
    "properties",
    [{}, {"": 1}, {"a..b": 1}, {"a": "{{ secrets.x }}"}, {"a": "{% if x %}y{% endif %}"}],
)
def test_update_session_bad_config(properties: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        UpdateSession.build({"properties": properties})


# --- events ------------------------------------------------------------------------------------


async def test_emit_event_normalises_type_and_renders_properties(
    make_context: MakeContext,
) -> None:
    context = make_context(profile={"traits": {"tier": "gold"}})
    action = EmitEvent.build(
        {
            "type": "  Order Paid ",
            "properties": {"total": "{{ payload.total }}", "tier": "{{ profile.traits.tier }}"},
        }
    )
    result = output(await action.run({"total": 99.5}, context))
    assert result == Output("payload", {"total": 99.5})
    assert context.effects.emitted == [EmittedEvent("order-paid", {"total": 99.5, "tier": "gold"})]


async def test_emit_event_without_properties(make_context: MakeContext) -> None:
    context = make_context(no_profile=True)
    await EmitEvent.build({"type": "ping"}).run({}, context)
    assert context.effects.emitted == [EmittedEvent("ping", {})]


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"type": "   "},
        {"type": "x" * 129},
        {"type": "a", "properties": {"v": "{{ nothing.here }}"}},
        {"type": "a", "properties": {"v": "{{ event.__class__ }}"}},
    ],
)
def test_emit_event_bad_config(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        EmitEvent.build(config)


# --- delay -------------------------------------------------------------------------------------


async def test_delay_by_seconds(make_context: MakeContext) -> None:
    result = await Delay.build({"seconds": 3600}).run({"p": 1}, make_context())
    assert result == Suspend(3600, {"p": 1}, port="payload")


async def test_delay_until_a_date(make_context: MakeContext) -> None:
    later = (NOW + timedelta(days=2, minutes=5)).isoformat()
    context = make_context(event={"properties": {"at": later}})
    result = await Delay.build({"until_path": "event@properties.at"}).run({}, context)
    assert result == Suspend(2 * 86400 + 300, {}, port="payload")


async def test_delay_until_a_past_date_continues_at_once(make_context: MakeContext) -> None:
    result = await Delay.build({"until_path": "payload@at"}).run(
        {"at": "2020-01-01T00:00:00"}, make_context()
    )
    assert isinstance(result, Suspend)
    assert result.seconds == 0


@pytest.mark.parametrize("value", [None, "soon", (NOW + timedelta(days=91)).isoformat()])
async def test_delay_until_a_bad_date_stops_the_run(make_context: MakeContext, value: Any) -> None:
    payload = {} if value is None else {"at": value}
    with pytest.raises(ActionError, match="payload@at"):
        await Delay.build({"until_path": "payload@at"}).run(payload, make_context())


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"seconds": 0},
        {"seconds": -5},
        {"seconds": 91 * 86400},
        {"seconds": 10, "until_path": "payload@at"},
        {"until_path": "later"},
    ],
)
def test_delay_bad_config(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        Delay.build(config)
