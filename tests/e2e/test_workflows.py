"""Rules and workflows over HTTP, end to end: a rule on `purchase` runs a workflow that counts
purchases on the profile, puts repeat buyers in a segment and tells a real local web service;
debugging runs without saving; a delayed step survives a crash of the server.

These tests run their own server (the delayed-step test kills it), with TRACK_DEBUG on and a
fast scheduler, so nothing here waits long.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.modes import SHARED_MODES, server_in_mode
from tests.support.outside import RecordingServer, Reply, recording_http_server
from tests.support.server import RunningServer, running_server, start_server

FAST = {
    "TRACK_DEBUG": "yes",
    "TESSERA_DELIVERY_POLL_SECONDS": "0.05",
    "TESSERA_DELIVERY_BACKOFF_SECONDS": "0.05",
    "TESSERA_DELIVERY_BACKOFF_MAX_SECONDS": "0.2",
    "TESSERA_SCHEDULER_POLL_SECONDS": "0.1",
    "TESSERA_WORKFLOW_CACHE_SECONDS": "0",
}


@pytest.fixture(scope="module", params=SHARED_MODES)
def automation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp(f"automation-{request.param}") / "data"
    with server_in_mode(request.param, data_dir, FAST) as server:
        yield server


@pytest.fixture(scope="module")
def admin(automation: RunningServer) -> httpx.Client:
    return automation.client(automation.token())


@pytest.fixture(scope="module")
def web_source(admin: httpx.Client) -> str:
    answer = admin.post("/event-source", json={"id": "shop", "name": "Shop"})
    assert answer.status_code in (200, 201), answer.text
    return "shop"


@pytest.fixture
def hook() -> Iterator[RecordingServer]:
    with recording_http_server() as server:
        yield server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def track(
    client: httpx.Client, source: str, session: str, *events: dict[str, Any], **more: Any
) -> dict[str, Any]:
    answer = client.post(
        "/track",
        json={"source": {"id": source}, "session": {"id": session}, "events": list(events), **more},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def node(node_id: str, action: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "action": action, "config": config}


def edge(source: str, target: str, port: str = "payload") -> dict[str, Any]:
    return {"source": source, "target": target, "source_port": port}


def save_workflow(admin: httpx.Client, nodes: list[Any], edges: list[Any], **more: Any) -> str:
    workflow_id = unique("wf")
    answer = admin.post(
        "/workflow",
        json={
            "id": workflow_id,
            "name": workflow_id,
            "draft": {"nodes": nodes, "edges": edges},
            "deploy": True,
            **more,
        },
    )
    assert answer.status_code == 201, answer.text
    return workflow_id


def save_rule(admin: httpx.Client, event_type: str, workflow_id: str, **more: Any) -> str:
    rule_id = unique("rule")
    answer = admin.post(
        "/rule",
        json={
            "id": rule_id,
            "name": rule_id,
            "event_type": event_type,
            "workflow_id": workflow_id,
            **more,
        },
    )
    assert answer.status_code == 201, answer.text
    return rule_id


def purchase_flow(hook: RecordingServer) -> tuple[list[Any], list[Any]]:
    nodes = [
        node("start", "start"),
        node("count", "increment_trait", path="profile@traits.purchases", by=1),
        node("repeat", "condition", condition="profile@traits.purchases >= 2"),
        node("segment", "add_segment", segment="repeat-buyer"),
        node(
            "tell",
            "http_call",
            url=hook.url("/crm/repeat-buyer"),
            method="POST",
            headers={"X-Api-Key": "crm-secret-key"},
            secret_headers=["X-Api-Key"],
            body={
                "profile": "{{ profile.id }}",
                "purchases": "{{ profile.traits.purchases }}",
                "order": "{{ event.properties.order }}",
            },
        ),
        node("failed", "set_trait", path="profile@traits.crm_failed", value=True),
    ]
    edges = [
        edge("start", "count"),
        edge("count", "repeat"),
        edge("repeat", "segment", "true"),
        edge("segment", "tell"),
        edge("tell", "failed", "error"),
    ]
    return nodes, edges


# --- The story ---------------------------------------------------------------------------------


def test_a_rule_on_purchase_counts_segments_and_calls_a_web_service(
    automation: RunningServer, admin: httpx.Client, web_source: str, hook: RecordingServer
) -> None:
    event_type = unique("purchase")
    workflow_id = save_workflow(admin, *purchase_flow(hook))
    rule_id = save_rule(admin, event_type, workflow_id)
    session = unique("visit")
    tracker = automation.client()

    first = track(tracker, web_source, session, {"type": event_type, "properties": {"order": "A1"}})
    profile_id = first["profile"]["id"]
    profile = admin.get(f"/profile/{profile_id}").json()
    assert profile["traits"]["purchases"] == 1
    assert "repeat-buyer" not in profile["segments"]
    assert hook.requests == []

    second = track(
        tracker, web_source, session, {"type": event_type, "properties": {"order": "A2"}}
    )
    profile = admin.get(f"/profile/{profile_id}").json()
    assert profile["traits"]["purchases"] == 2
    assert "repeat-buyer" in profile["segments"]
    assert "crm_failed" not in profile["traits"]
    [call] = hook.requests
    assert call.method == "POST" and call.path == "/crm/repeat-buyer"
    assert call.json() == {"profile": profile_id, "purchases": 2, "order": "A2"}
    assert call.headers["x-api-key"] == "crm-secret-key"

    stored = admin.get(f"/event/{second['events'][0]}").json()
    assert stored["metadata"]["automation"]["rules"] == [rule_id]
    assert stored["metadata"]["automation"]["workflows"] == [workflow_id]
    assert stored["metadata"]["automation"]["errors"] == []


def test_a_failing_web_service_takes_the_error_port(
    automation: RunningServer, admin: httpx.Client, web_source: str
) -> None:
    with recording_http_server(503, 503, 503, 503) as failing:
        event_type = unique("purchase")
        save_rule(admin, event_type, save_workflow(admin, *purchase_flow(failing)))
        session = unique("visit")
        tracker = automation.client()
        track(tracker, web_source, session, {"type": event_type, "properties": {"order": "B1"}})
        answer = track(
            tracker, web_source, session, {"type": event_type, "properties": {"order": "B2"}}
        )
        # The action's default: two retries, so three requests, then the error port.
        assert len(failing.requests) == 3
    profile = admin.get(f"/profile/{answer['profile']['id']}").json()
    assert profile["traits"]["crm_failed"] is True


def test_secrets_of_a_workflow_are_never_answered_and_are_kept_when_sent_back(
    admin: httpx.Client, hook: RecordingServer
) -> None:
    workflow_id = save_workflow(admin, *purchase_flow(hook))
    shown = admin.get(f"/workflow/{workflow_id}").json()
    assert "crm-secret-key" not in str(shown)
    tell = next(n for n in shown["draft"]["nodes"] if n["id"] == "tell")
    assert tell["config"]["headers"]["X-Api-Key"] == "********"
    # Sending the workflow back as it was shown keeps the secret.
    resent = admin.post(
        "/workflow",
        json={"id": workflow_id, "name": "renamed", "draft": shown["draft"], "deploy": True},
    )
    assert resent.status_code == 200, resent.text
    assert "crm-secret-key" not in resent.text


def test_a_kept_secret_is_not_sent_to_a_new_url(admin: httpx.Client, hook: RecordingServer) -> None:
    workflow_id = save_workflow(admin, *purchase_flow(hook))
    shown = admin.get(f"/workflow/{workflow_id}").json()
    tell = next(n for n in shown["draft"]["nodes"] if n["id"] == "tell")
    tell["config"]["url"] = "https://collector.attacker.example.net/steal"
    answer = admin.patch(f"/workflow/{workflow_id}", json={"draft": shown["draft"]})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "node 'tell'" in detail and "url changed" in detail
    assert "headers.X-Api-Key" in detail and "crm-secret-key" not in answer.text
    # Given again, the secret may go to the new URL.
    tell["config"]["headers"]["X-Api-Key"] = "another-key"
    answer = admin.patch(f"/workflow/{workflow_id}", json={"draft": shown["draft"]})
    assert answer.status_code == 200, answer.text


def test_rules_honour_source_condition_segment_and_consents(
    automation: RunningServer, admin: httpx.Client, web_source: str
) -> None:
    event_type = unique("signup")
    mark = save_workflow(
        admin,
        [node("start", "start"), node("mark", "increment_trait", path="profile@traits.runs")],
        [edge("start", "mark")],
    )
    save_rule(admin, event_type, mark, condition='event@properties.plan == "pro"')
    save_rule(admin, event_type, mark, source_id="another-source")
    save_rule(admin, event_type, mark, segment="nobody-is-here")
    save_rule(admin, event_type, mark, required_consents=["marketing"])
    tracker = automation.client()
    free = track(
        tracker, web_source, unique("v"), {"type": event_type, "properties": {"plan": "free"}}
    )
    pro = track(
        tracker, web_source, unique("v"), {"type": event_type, "properties": {"plan": "pro"}}
    )
    assert "runs" not in admin.get(f"/profile/{free['profile']['id']}").json()["traits"]
    # Only the condition rule matched: wrong source, not in the segment, no consent.
    assert admin.get(f"/profile/{pro['profile']['id']}").json()["traits"]["runs"] == 1

    session = unique("v")
    track(
        tracker,
        web_source,
        session,
        {"type": "consent-granted", "properties": {"type": "marketing"}},
    )
    consented = track(
        tracker, web_source, session, {"type": event_type, "properties": {"plan": "x"}}
    )
    assert admin.get(f"/profile/{consented['profile']['id']}").json()["traits"]["runs"] == 1


def test_emitted_events_and_segment_events_run_their_own_rules(
    automation: RunningServer, admin: httpx.Client, web_source: str
) -> None:
    event_type = unique("order")
    segment_id = unique("big-spender")
    answer = admin.post(
        "/segment",
        json={"id": segment_id, "name": "Big spender", "condition": "profile@traits.spent >= 100"},
    )
    assert answer.status_code == 201, answer.text
    spend = save_workflow(
        admin,
        [
            node("start", "start"),
            node(
                "add",
                "set_trait",
                path="profile@traits.spent",
                value="{{ event.properties.total }}",
            ),
            node(
                "emit",
                "emit_event",
                type="order-counted",
                properties={"total": "{{ event.properties.total }}"},
            ),
        ],
        [edge("start", "add"), edge("add", "emit")],
    )
    counted = save_workflow(
        admin,
        [node("start", "start"), node("n", "increment_trait", path="profile@traits.counted")],
        [edge("start", "n")],
    )
    welcome = save_workflow(
        admin,
        [
            node("start", "start"),
            node(
                "w",
                "set_trait",
                path="profile@traits.welcomed",
                value="{{ event.properties.segment }}",
            ),
        ],
        [edge("start", "w")],
    )
    save_rule(admin, event_type, spend)
    save_rule(admin, "order-counted", counted)
    save_rule(
        admin, "segment-entered", welcome, condition=f'event@properties.segment == "{segment_id}"'
    )
    result = track(
        automation.client(),
        web_source,
        unique("v"),
        {"type": event_type, "properties": {"total": 150}},
    )
    profile = admin.get(f"/profile/{result['profile']['id']}").json()
    assert profile["traits"]["spent"] == 150
    assert profile["traits"]["counted"] == 1
    assert segment_id in profile["segments"]
    assert profile["traits"]["welcomed"] == segment_id
    events = admin.get(f"/profile/{result['profile']['id']}/events?limit=50").json()
    by_type = {event["type"]: event for event in events["result"]}
    assert {event_type, "order-counted", "segment-entered"} <= set(by_type)
    entered = by_type["segment-entered"]
    assert entered["properties"] == {"segment": segment_id, "name": "Big spender"}
    assert entered["source"]["id"] == "tessera.segments"
    assert entered["metadata"]["internal"] is True
    assert by_type["order-counted"]["metadata"]["status"] == "internal"
    assert by_type["order-counted"]["source"]["id"] == web_source


def test_a_workflow_merges_profiles_that_share_a_key(
    automation: RunningServer, admin: httpx.Client, web_source: str
) -> None:
    event_type = unique("login")
    customer = unique("cust")
    merge = save_workflow(
        admin,
        [
            node("start", "start"),
            node(
                "key",
                "set_trait",
                path="profile@traits.customer_id",
                value="{{ event.properties.customer }}",
            ),
            node("merge", "merge_profiles", paths=["traits.customer_id"]),
        ],
        [edge("start", "key"), edge("key", "merge")],
    )
    save_rule(admin, event_type, merge)
    tracker = automation.client()
    phone = track(
        tracker,
        web_source,
        unique("phone"),
        {"type": event_type, "properties": {"customer": customer}},
    )
    laptop = track(
        tracker,
        web_source,
        unique("laptop"),
        {"type": event_type, "properties": {"customer": customer}},
    )
    survivor = admin.get(f"/profile/{laptop['profile']['id']}").json()
    assert {phone["profile"]["id"], laptop["profile"]["id"]} <= set(survivor["ids"])
    assert admin.get(f"/profile/{phone['profile']['id']}").json()["id"] == survivor["id"]
    assert survivor["stats"]["visits"] == 2


# --- Destinations ------------------------------------------------------------------------------


def test_a_failing_destination_is_retried_then_dead_lettered_while_track_answers(
    automation: RunningServer, admin: httpx.Client, web_source: str
) -> None:
    event_type = unique("purchase")
    # The first delivery hangs for a while before failing: /track must not wait for it.
    with recording_http_server(
        Reply(500, {"error": "down"}, delay_s=2.0), default=Reply(500, {"error": "down"})
    ) as receiver:
        created = admin.post(
            "/destination",
            json={
                "name": "warehouse",
                "on": "event",
                "event_types": [event_type],
                "url": receiver.url("/ingest"),
                "template": {"order": "{{ event.properties.order }}", "who": "{{ profile.id }}"},
                "max_attempts": 3,
            },
        )
        assert created.status_code == 201, created.text
        destination_id = created.json()["id"]
        tracker = automation.client()
        session = unique("v")
        first = track(
            tracker, web_source, session, {"type": event_type, "properties": {"order": "C1"}}
        )
        wait_for(lambda: receiver.requests, "the first delivery attempt to reach the receiver")
        # While that attempt is still held by the receiver, collection goes on answering.
        more = [
            track(tracker, web_source, session, {"type": unique("page-view")}) for _ in range(20)
        ]
        assert len(more) == 20
        assert len(receiver.requests) == 1, "the held attempt has not finished yet"
        dead = wait_for(
            lambda: [
                m
                for m in admin.get("/destinations/dead-letters").json()["result"]
                if m["destination_id"] == destination_id
            ],
            "the message to be dead-lettered after its attempts",
        )
        assert len(receiver.requests) == 3
        assert {r.json()["order"] for r in receiver.requests} == {"C1"}
        assert receiver.requests[0].json() == {"order": "C1", "who": first["profile"]["id"]}
        [message] = dead
        attempts = admin.get(f"/outbox/{message['id']}/attempts").json()
        assert [a["status"] for a in attempts["result"]] == [500, 500, 500]


def test_a_profile_destination_hears_of_mapped_changes(
    automation: RunningServer, admin: httpx.Client, web_source: str, hook: RecordingServer
) -> None:
    created = admin.post(
        "/destination",
        json={
            "name": "crm-profiles",
            "on": "profile",
            "condition": "profile@data.contact.email.main EXISTS",
            "url": hook.url("/profiles"),
            "template": {"email": "{{ profile.data.contact.email.main }}"},
        },
    )
    assert created.status_code == 201, created.text
    email = f"{unique('p')}@example.com"
    track(
        automation.client(),
        web_source,
        unique("v"),
        {"type": "identify", "properties": {"email": email}},
    )
    received = wait_for(
        lambda: [r for r in hook.requests if r.path == "/profiles" and r.json()["email"] == email],
        "the profile change to be delivered",
    )
    assert received[0].json() == {"email": email}
    assert admin.delete(f"/destination/{created.json()['id']}").status_code == 204


# --- Debugging ---------------------------------------------------------------------------------


def test_track_debug_answers_the_traces_when_asked(
    automation: RunningServer, admin: httpx.Client, web_source: str, hook: RecordingServer
) -> None:
    event_type = unique("purchase")
    workflow_id = save_workflow(admin, *purchase_flow(hook))
    save_rule(admin, event_type, workflow_id)
    tracker = automation.client()
    plain = track(tracker, web_source, unique("v"), {"type": event_type})
    assert "debug" not in plain
    debugged = track(
        tracker, web_source, unique("v"), {"type": event_type}, options={"debugger": True}
    )
    [run] = debugged["debug"]
    assert run["workflow"]["id"] == workflow_id
    assert [n["node"] for n in run["nodes"]] == ["start", "count", "repeat"]
    assert run["nodes"][2]["ports"] == ["false"]
    assert run["nodes"][1]["outputs"][0]["port"] == "payload"
    # Traces carry payloads, but the run was a real one: its change was saved.
    profile = admin.get(f"/profile/{debugged['profile']['id']}").json()
    assert profile["traits"]["purchases"] == 1


def test_debugging_a_draft_runs_it_without_saving(
    automation: RunningServer, admin: httpx.Client, web_source: str
) -> None:
    workflow_id = save_workflow(
        admin,
        [
            node("start", "start"),
            node("tier", "set_trait", path="profile@traits.tier", value="gold"),
            node("emit", "emit_event", type="upgraded"),
            node("log", "log", message="upgraded {{ profile.id }}"),
        ],
        [edge("start", "tier"), edge("tier", "emit"), edge("emit", "log")],
    )
    stored = track(automation.client(), web_source, unique("v"), {"type": unique("view")})
    profile_id = stored["profile"]["id"]
    answer = admin.post(f"/workflow/{workflow_id}/debug", json={"event_id": stored["events"][0]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["error"] is None
    assert [n["node"] for n in body["nodes"]] == ["start", "tier", "emit", "log"]
    assert body["profile"]["traits"]["tier"] == "gold"
    assert body["effects"]["emitted"] == [{"type": "upgraded", "properties": {}}]
    assert body["effects"]["logs"] == [{"level": "info", "message": f"upgraded {profile_id}"}]
    assert body["nodes"][3]["logs"] == body["effects"]["logs"]
    assert body["workflow"]["version"] is None  # a draft ran
    # Nothing was saved.
    assert "tier" not in admin.get(f"/profile/{profile_id}").json()["traits"]

    given = admin.post(
        f"/workflow/{workflow_id}/debug",
        json={"event": {"type": "page-view"}, "profile": {"id": "x", "traits": {}}},
    )
    assert given.status_code == 200, given.text
    assert given.json()["profile"]["traits"] == {"tier": "gold"}


# --- Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draft", "problem"),
    [
        ({"nodes": [node("a", "teleport")], "edges": []}, "no action named 'teleport'"),
        ({"nodes": [node("a", "increment_trait", path="profile@id")], "edges": []}, "node 'a'"),
        ({"nodes": [node("a", "start")], "edges": [edge("a", "b")]}, "no node 'b'"),
        ({"nodes": [node("a", "condition", condition="profile@x >")], "edges": []}, "node 'a'"),
        (
            {
                "nodes": [node("a", "start"), node("b", "log", message="m")],
                "edges": [edge("a", "b"), edge("b", "a")],
            },
            "cycle",
        ),
    ],
)
def test_a_workflow_that_cannot_run_is_refused_with_422(
    admin: httpx.Client, draft: dict[str, Any], problem: str
) -> None:
    answer = admin.post("/workflow", json={"name": "bad", "draft": draft})
    assert answer.status_code == 422, answer.text
    assert problem in answer.json()["detail"]


def test_bad_rules_are_refused_and_unknown_ids_are_404(admin: httpx.Client) -> None:
    missing = admin.post("/rule", json={"name": "r", "event_type": "x", "workflow_id": "nope"})
    assert missing.status_code == 422
    assert "no workflow 'nope'" in missing.json()["detail"]
    workflow_id = save_workflow(admin, [node("s", "start")], [])
    bad_condition = admin.post(
        "/rule",
        json={
            "name": "r",
            "event_type": "x",
            "workflow_id": workflow_id,
            "condition": "event@ ===",
        },
    )
    assert bad_condition.status_code == 422
    assert admin.get("/rule/nope").status_code == 404
    assert admin.get("/workflow/nope").status_code == 404
    assert admin.post("/workflow/nope/deploy").status_code == 404
    assert admin.post("/workflow/nope/debug", json={"event": {"type": "x"}}).status_code == 404
    assert admin.post(f"/workflow/{workflow_id}/debug", json={}).status_code == 422


def test_rules_and_workflows_can_be_listed_disabled_and_deleted(
    automation: RunningServer, admin: httpx.Client, web_source: str
) -> None:
    event_type = unique("ping")
    workflow_id = save_workflow(
        admin,
        [node("s", "start"), node("n", "increment_trait", path="profile@traits.pings")],
        [edge("s", "n")],
    )
    rule_id = save_rule(admin, event_type, workflow_id)
    assert rule_id in {
        r["id"] for r in admin.get(f"/rules?event_type={event_type}").json()["result"]
    }
    assert workflow_id in {w["id"] for w in admin.get("/workflows").json()["result"]}
    assert admin.post(f"/rule/{rule_id}/disable").json()["enabled"] is False
    tracker = automation.client()
    off = track(tracker, web_source, unique("v"), {"type": event_type})
    assert "pings" not in admin.get(f"/profile/{off['profile']['id']}").json()["traits"]
    assert admin.post(f"/rule/{rule_id}/enable").json()["enabled"] is True
    assert admin.post(f"/workflow/{workflow_id}/disable").json()["enabled"] is False
    still_off = track(tracker, web_source, unique("v"), {"type": event_type})
    assert still_off["warnings"], "a rule whose workflow is disabled says so"
    assert admin.post(f"/workflow/{workflow_id}/enable").json()["enabled"] is True
    on = track(tracker, web_source, unique("v"), {"type": event_type})
    assert admin.get(f"/profile/{on['profile']['id']}").json()["traits"]["pings"] == 1
    assert admin.delete(f"/rule/{rule_id}").status_code == 204
    assert admin.delete(f"/workflow/{workflow_id}").status_code == 204
    assert admin.get(f"/rule/{rule_id}").status_code == 404
    assert len(admin.get("/actions").json()["result"]) >= 30


# --- Delays and restarts -----------------------------------------------------------------------


def test_a_delayed_step_fires_after_the_server_is_killed_and_restarted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, FAST)
    try:
        admin = server.client(server.token())
        assert admin.post("/event-source", json={"id": "shop", "name": "Shop"}).status_code == 201
        workflow_id = save_workflow(
            admin,
            [
                node("start", "start"),
                node("wait", "delay", seconds=3),
                node("remind", "set_trait", path="profile@traits.reminded", value=True),
            ],
            [edge("start", "wait"), edge("wait", "remind")],
        )
        save_rule(admin, "cart-abandoned", workflow_id)
        answer = track(server.client(), "shop", "visit-1", {"type": "cart-abandoned"})
        profile_id = answer["profile"]["id"]
        assert "reminded" not in admin.get(f"/profile/{profile_id}").json()["traits"]
    finally:
        server.kill()  # SIGKILL within a moment of the answer: the step cannot have run yet
    with running_server(data_dir, FAST, admin_password=server.admin_password) as restarted:
        admin = restarted.client(restarted.token())
        profile = wait_for(
            lambda: (
                (p := admin.get(f"/profile/{profile_id}").json())["traits"].get("reminded") and p
            ),
            "the delayed step to run after the restart",
        )
        assert profile["traits"]["reminded"] is True


def test_enable_workflow_no_turns_the_stage_off(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", {**FAST, "ENABLE_WORKFLOW": "no"}) as server:
        admin = server.client(server.token())
        admin.post("/event-source", json={"id": "shop", "name": "Shop"})
        workflow_id = save_workflow(
            admin,
            [node("s", "start"), node("n", "increment_trait", path="profile@traits.runs")],
            [edge("s", "n")],
        )
        save_rule(admin, "ping", workflow_id)
        answer = track(server.client(), "shop", "v", {"type": "ping"})
        assert "runs" not in admin.get(f"/profile/{answer['profile']['id']}").json()["traits"]
