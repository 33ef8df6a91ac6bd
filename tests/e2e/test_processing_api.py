"""Event processing configuration over HTTP, and its effect on what /track stores.

Until the router is included in the app these endpoints answer 404 and every test here is
skipped (the ``wired`` fixture checks once); nothing needs removing when it is wired.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest


def unique_type(prefix: str = "custom") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def track(
    client: httpx.Client, source_id: str, *events: dict[str, Any], **payload: Any
) -> dict[str, Any]:
    answer = client.post(
        "/track", json={"source": {"id": source_id}, "events": list(events), **payload}
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def created(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


# --- Management ------------------------------------------------------------------------------


def test_builtin_event_types_are_listed_with_their_mappings(api: httpx.Client) -> None:
    listed = api.get("/event-types/builtin").json()
    types = {item["type"]: item for item in listed["result"]}
    assert listed["total"] == len(types)
    assert {"identify", "sign-in", "sign-up", "page-view", "purchase", "order-completed"} <= set(
        types
    )
    assert {"add-to-cart", "consent-granted", "consent-revoked"} <= set(types)
    identify = types["identify"]
    assert {
        "event": "properties.email",
        "op": "equals",
        "profile": "data.contact.email.main",
    }.items() <= identify["mappings"][0].items()
    assert "email" in identify["properties"]


def test_endpoints_need_a_token(anonymous: httpx.Client) -> None:
    for path in ("/event-types/builtin", "/event-mappings", "/event-validations"):
        assert anonymous.get(path).status_code == 401
    assert anonymous.post("/event-mapping", json={}).status_code == 401


def test_mapping_create_read_list_patch_toggle_delete(api: httpx.Client) -> None:
    event_type = unique_type()
    rule = created(
        api.post(
            "/event-mapping",
            json={
                "name": "Newsletter topic",
                "event_type": f"  {event_type.upper()} ",
                "mappings": [
                    {"event": "properties.topic", "op": "append", "profile": "traits.topics"}
                ],
            },
        )
    )
    assert rule["event_type"] == event_type  # normalised like event types are
    assert rule["enabled"] is True and rule["version"] == 1 and rule["condition"] is None
    rule_id = rule["id"]
    assert api.get(f"/event-mapping/{rule_id}").json() == rule

    listed = api.get("/event-mappings", params={"event_type": event_type}).json()
    assert [item["id"] for item in listed["result"]] == [rule_id] and listed["total"] == 1
    assert rule_id in [item["id"] for item in api.get("/event-mappings").json()["result"]]

    patched = api.patch(
        f"/event-mapping/{rule_id}",
        json={"name": "Topics", "condition": "event@properties.topic EXISTS", "mappings": None},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Topics" and patched.json()["version"] == 2
    assert patched.json()["mappings"] == rule["mappings"]  # null: unchanged
    assert patched.json()["condition"] == "event@properties.topic EXISTS"
    cleared = api.patch(f"/event-mapping/{rule_id}", json={"condition": None}).json()
    assert cleared["condition"] is None  # null: cleared, for a field where null means "always"

    assert api.post(f"/event-mapping/{rule_id}/disable").json()["enabled"] is False
    assert api.get(f"/event-mapping/{rule_id}").json()["enabled"] is False
    assert api.post(f"/event-mapping/{rule_id}/enable").json()["enabled"] is True

    assert api.delete(f"/event-mapping/{rule_id}").status_code == 204
    assert api.get(f"/event-mapping/{rule_id}").status_code == 404
    assert api.delete(f"/event-mapping/{rule_id}").status_code == 404
    assert api.post(f"/event-mapping/{rule_id}/enable").status_code == 404


def test_posting_the_same_id_replaces_and_keeps_the_creation_time(api: httpx.Client) -> None:
    rule_id = f"rule-{uuid.uuid4().hex[:8]}"
    body = {
        "id": rule_id,
        "name": "v",
        "event_type": unique_type(),
        "json_schema": {"type": "object"},
    }
    first = created(api.post("/event-validation", json=body))
    again = api.post("/event-validation", json={**body, "name": "v2"})
    assert again.status_code == 200
    assert again.json()["created"] == first["created"] and again.json()["version"] == 2
    # Ids are per kind: a mapping may use the same one.
    assert api.get(f"/event-mapping/{rule_id}").status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        (
            "/event-mapping",
            {"mappings": [{"event": "properties.a", "profile": "metadata.time.insert"}]},
            "mappings[0] ('metadata.time.insert')",
        ),
        ("/event-mapping", {"mappings": [{"event": "properties.a", "profile": "ids"}]}, "ids"),
        (
            "/event-mapping",
            {"mappings": [{"profile": "traits.a", "value": "{{ ''.__class__ }}"}]},
            "__class__",
        ),
        (
            "/event-mapping",
            {"mappings": [{"profile": "traits.a", "value": 1}], "condition": "event@ =="},
            "condition",
        ),
        ("/event-mapping", {"mappings": [{"profile": "traits.a", "op": "nope"}]}, "op"),
        ("/event-mapping", {"mappings": []}, "mappings"),
        ("/event-validation", {"json_schema": {"type": "no-such-type"}}, "JSON Schema"),
        (
            "/event-validation",
            {"json_schema": {"$ref": "http://169.254.169.254/latest/meta-data"}},
            "not allowed",
        ),
        ("/event-reshaping", {}, "needs 'properties', 'context'"),
        (
            "/event-reshaping",
            {"properties": {"x": "{{ event.properties.x.__init__.__globals__ }}"}},
            "not allowed",
        ),
        (
            "/event-reshaping",
            {"properties": {"x": "{% for i in event %}{% endfor %}"}},
            "only {{ expressions }}",
        ),
        ("/event-mapping", {"id": "a/b", "mappings": [{"profile": "traits.a", "value": 1}]}, "id"),
    ],
)
def test_rules_that_cannot_work_are_refused_with_the_reason(
    api: httpx.Client, path: str, body: dict[str, Any], words: str
) -> None:
    answer = api.post(path, json={"name": "bad", "event_type": unique_type(), **body})
    assert answer.status_code == 422, answer.text
    assert words in str(answer.json()["detail"])


def test_patch_is_checked_too(api: httpx.Client) -> None:
    rule = created(
        api.post(
            "/event-mapping",
            json={
                "name": "ok",
                "event_type": unique_type(),
                "mappings": [{"profile": "traits.a", "value": 1}],
            },
        )
    )
    refused = api.patch(
        f"/event-mapping/{rule['id']}", json={"mappings": [{"profile": "id", "value": 1}]}
    )
    assert refused.status_code == 422 and "not writable" in refused.json()["detail"]
    assert api.get(f"/event-mapping/{rule['id']}").json()["version"] == 1


# --- Effect on collection --------------------------------------------------------------------


def test_identify_fills_the_profile_without_configuration(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    email = f"ann.{uuid.uuid4().hex[:8]}@example.com"
    body = track(
        anonymous,
        source_id,
        {
            "type": "Identify",
            "properties": {"email": email, "first_name": "Ann", "traits": {"plan": "pro"}},
        },
    )
    profile = api.get(f"/profile/{body['profile']['id']}").json()
    assert profile["data"]["contact"]["email"]["main"] == email
    assert profile["data"]["pii"] == {"first_name": "Ann"}
    assert profile["traits"] == {"plan": "pro"}


def test_builtin_counters_purchase_and_consent(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    body = track(
        anonymous,
        source_id,
        {"type": "page-view"},
        {"type": "page-view"},
        {"type": "add-to-cart", "properties": {"sku": "A-1"}},
        {"type": "purchase", "properties": {"total": 20.5, "order_id": "o-1"}},
        {"type": "order-completed", "properties": {"revenue": "9.5"}},
        {"type": "consent-granted", "properties": {"type": "marketing"}},
        {"type": "consent-revoked", "properties": {"type": "analytics"}},
    )
    profile = api.get(f"/profile/{body['profile']['id']}").json()
    stats = profile["stats"]
    assert (stats["views"], stats["cart_additions"], stats["orders"]) == (2, 1, 2)
    assert stats["ltv"] == 30.0
    assert profile["data"]["purchases"]["last_order_id"] == "o-1"
    assert profile["consents"]["marketing"]["granted"] is True
    assert profile["consents"]["analytics"]["granted"] is False
    assert profile["consents"]["marketing"]["time"]


def test_custom_mapping_applies_at_once_and_stops_when_disabled(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    event_type = unique_type("newsletter")
    rule = created(
        api.post(
            "/event-mapping",
            json={
                "name": "topics",
                "event_type": event_type,
                "mappings": [
                    {"event": "properties.topic", "op": "append", "profile": "traits.topics"},
                    {"op": "increment", "profile": "stats.newsletter_events"},
                ],
            },
        )
    )
    session = {"id": f"s-{uuid.uuid4()}"}
    first = track(
        anonymous,
        source_id,
        {"type": event_type, "properties": {"topic": "shoes"}},
        {"type": event_type, "properties": {"topic": "shoes"}},
        {"type": event_type, "properties": {"topic": "hats"}},
        session=session,
    )
    profile_id = first["profile"]["id"]
    profile = api.get(f"/profile/{profile_id}").json()
    assert profile["traits"]["topics"] == ["shoes", "hats"]
    assert profile["stats"]["newsletter_events"] == 3

    api.post(f"/event-mapping/{rule['id']}/disable")
    track(
        anonymous, source_id, {"type": event_type, "properties": {"topic": "bags"}}, session=session
    )
    assert api.get(f"/profile/{profile_id}").json()["traits"]["topics"] == ["shoes", "hats"]


def test_condition_decides_whether_a_mapping_runs(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    event_type = unique_type("cart")
    created(
        api.post(
            "/event-mapping",
            json={
                "name": "big carts",
                "event_type": event_type,
                "condition": "event@properties.total > 100",
                "mappings": [{"profile": "traits.big_cart", "value": True}],
            },
        )
    )
    small = track(anonymous, source_id, {"type": event_type, "properties": {"total": 5}})
    big = track(anonymous, source_id, {"type": event_type, "properties": {"total": 500}})
    assert "big_cart" not in api.get(f"/profile/{small['profile']['id']}").json()["traits"]
    assert api.get(f"/profile/{big['profile']['id']}").json()["traits"]["big_cart"] is True


def test_invalid_events_are_kept_marked_and_not_mapped(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    event_type = unique_type("form")
    created(
        api.post(
            "/event-validation",
            json={
                "name": "needs email",
                "event_type": event_type,
                "json_schema": {
                    "properties": {
                        "properties": {
                            "required": ["email"],
                            "properties": {"email": {"type": "string"}},
                        }
                    }
                },
            },
        )
    )
    created(
        api.post(
            "/event-mapping",
            json={
                "name": "email",
                "event_type": event_type,
                "mappings": [{"event": "properties.email", "profile": "traits.form_email"}],
            },
        )
    )
    body = track(anonymous, source_id, {"type": event_type, "properties": {"email": 42}})
    assert any("event.properties.email must be string" in w for w in body["warnings"]), body
    event = api.get(f"/event/{body['events'][0]}").json()
    assert event["metadata"]["valid"] is False and event["metadata"]["status"] == "invalid"
    assert event["metadata"]["errors"] == [
        "rule 'needs email': event.properties.email must be string"
    ]
    assert "form_email" not in api.get(f"/profile/{body['profile']['id']}").json()["traits"]

    good = track(anonymous, source_id, {"type": event_type, "properties": {"email": "a@b.c"}})
    assert api.get(f"/event/{good['events'][0]}").json()["metadata"]["valid"] is True
    profile = api.get(f"/profile/{good['profile']['id']}").json()
    assert profile["traits"]["form_email"] == "a@b.c"


def test_reshaping_replaces_properties_before_mapping_and_per_source(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    event_type = unique_type("legacy")
    created(
        api.post(
            "/event-reshaping",
            json={
                "name": "flatten",
                "event_type": event_type,
                "properties": {
                    "email": "{{ event.properties.user.mail }}",
                    "label": "{{ event.properties.user.mail | upper }}",
                    "source": "legacy",
                },
            },
        )
    )
    other_source = created(
        api.post("/event-source", json={"name": f"other {uuid.uuid4().hex[:6]}"})
    )["id"]
    created(
        api.post(
            "/event-reshaping",
            json={
                "name": "only for the other source",
                "event_type": event_type,
                "source_id": other_source,
                "properties": {"from": "other"},
            },
        )
    )
    created(
        api.post(
            "/event-mapping",
            json={
                "name": "email",
                "event_type": event_type,
                "mappings": [{"event": "properties.email", "profile": "traits.legacy_email"}],
            },
        )
    )
    body = track(
        anonymous, source_id, {"type": event_type, "properties": {"user": {"mail": "x@y.z"}}}
    )
    event = api.get(f"/event/{body['events'][0]}").json()
    assert event["properties"] == {"email": "x@y.z", "label": "X@Y.Z", "source": "legacy"}
    profile = api.get(f"/profile/{body['profile']['id']}").json()
    assert profile["traits"]["legacy_email"] == "x@y.z"

    other = track(anonymous, other_source, {"type": event_type, "properties": {"a": 1}})
    assert api.get(f"/event/{other['events'][0]}").json()["properties"] == {"from": "other"}
