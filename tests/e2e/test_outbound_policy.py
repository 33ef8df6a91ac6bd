"""The request-forgery policy, black-box: a server run with production settings refuses to
deliver to, or call, a loopback address (the local stand-in of another system); any server
refuses a workflow whose host a template would choose."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.outside import RecordingServer, recording_http_server
from tests.support.server import RunningServer, running_server

PRODUCTION = {
    "TESSERA_ENV": "production",
    "INSTALLATION_TOKEN": "an-installation-secret-for-tests",
    "TESSERA_DELIVERY_POLL_SECONDS": "0.2",
}


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("production") / "data", PRODUCTION) as server:
        yield server


@pytest.fixture(scope="module")
def admin(production: RunningServer) -> httpx.Client:
    return production.client(production.token())


@pytest.fixture
def receiver() -> Iterator[RecordingServer]:
    """The other system, on loopback: production must never reach it."""
    with recording_http_server() as server:
        yield server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_production_never_delivers_to_loopback(
    production: RunningServer, admin: httpx.Client, receiver: RecordingServer
) -> None:
    source = admin.post("/event-source", json={"id": unique("web"), "name": "Web"})
    assert source.status_code in (200, 201), source.text
    event_type = unique("signup")
    document = {
        "name": "internal",
        "on": "event",
        "event_types": [event_type],
        "url": receiver.url("/hook"),
        "max_attempts": 5,
    }
    # Written as an address, refused at once; as a name, at each delivery.
    at_once = admin.post("/destination", json=document)
    assert at_once.status_code == 422, at_once.text
    assert "127.0.0.1 is a loopback address" in at_once.json()["detail"]
    document["url"] = receiver.url("/hook").replace("127.0.0.1", "localhost")
    created = admin.post("/destination", json=document)
    assert created.status_code == 201, created.text
    destination_id = created.json()["id"]
    tracked = httpx.post(
        f"{production.base_url}/track",
        json={"source": {"id": source.json()["id"]}, "events": [{"type": event_type}]},
    )
    assert tracked.status_code == 200, tracked.text

    def deliveries() -> dict[str, Any]:
        answer: dict[str, Any] = admin.get(f"/destination/{destination_id}/deliveries").json()
        return answer

    deadline = time.monotonic() + 20
    while deliveries()["counts"]["dead"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    [message] = deliveries()["result"]
    assert message["state"] == "dead" and message["attempts"] == 1  # not retried
    [attempt] = admin.get(f"/outbox/{message['id']}/attempts").json()["result"]
    assert "refused by the outbound policy" in attempt["error"]
    assert "localhost resolves to" in attempt["error"] and "loopback" in attempt["error"]
    assert receiver.requests == []


def test_production_http_call_to_loopback_takes_the_error_port(
    admin: httpx.Client, receiver: RecordingServer
) -> None:
    workflow_id = unique("wf")
    graph = {
        "nodes": [
            {"id": "start", "action": "start"},
            {"id": "call", "action": "http_call", "config": {"url": receiver.url("/crm")}},
        ],
        "edges": [{"source": "start", "target": "call"}],
    }
    saved = admin.post("/workflow", json={"id": workflow_id, "name": "w", "draft": graph})
    assert saved.status_code == 201, saved.text
    debug = admin.post(f"/workflow/{workflow_id}/debug", json={"event": {"type": "ping"}})
    assert debug.status_code == 200, debug.text
    assert "refused by the outbound policy" in debug.text
    assert receiver.requests == []


@pytest.mark.parametrize(
    "url",
    ["https://{{ event.properties.host }}/collect", "https://api.example.com{{ event.type }}"],
)
def test_a_host_from_event_data_is_refused_when_saved(api: httpx.Client, url: str) -> None:
    graph = {
        "nodes": [
            {"id": "start", "action": "start"},
            {"id": "call", "action": "http_call", "config": {"url": url}},
        ],
        "edges": [{"source": "start", "target": "call"}],
    }
    answer = api.post("/workflow", json={"name": "exfiltrate", "draft": graph})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "node 'call'" in detail or "call" in detail
    assert "only the path, the query and the fragment may be templates" in detail
