"""POST /track as a website's tracker uses it."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.support.sources import ServerSource


def track(client: httpx.Client, source_id: str, **payload: Any) -> dict[str, Any]:
    payload.setdefault("events", [{"type": "page-view"}])
    answer = client.post("/track", json={"source": {"id": source_id}, **payload})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_answer_has_tracardi_shape_and_new_ids(anonymous: httpx.Client, source_id: str) -> None:
    body = track(anonymous, source_id, events=[{"type": "page-view"}, {"type": "click"}])
    assert set(body) == {"profile", "session", "events", "errors", "warnings", "ux", "response"}
    assert uuid.UUID(body["profile"]["id"]) and uuid.UUID(body["session"]["id"])
    assert len(body["events"]) == 2 and len(set(body["events"])) == 2
    assert body["errors"] == [] and body["warnings"] == [] and body["ux"] == []


def test_stores_event_with_metadata(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    body = track(
        anonymous,
        source_id,
        context={"page": {"url": "https://shop.example.com/"}},
        events=[
            {
                "type": "Add To Cart",
                "properties": {"sku": "A-1", "price": 9.5, "tags": ["x"]},
                "context": {"screen": {"w": 1280}},
                "tags": ["promo"],
                "time": "2026-01-02T03:04:05Z",
            }
        ],
    )
    event = api.get(f"/event/{body['events'][0]}").json()
    assert event["type"] == "add-to-cart"
    assert event["properties"] == {"sku": "A-1", "price": 9.5, "tags": ["x"]}
    assert event["context"] == {
        "page": {"url": "https://shop.example.com/"},
        "screen": {"w": 1280},
    }
    assert event["tags"] == ["promo"]
    assert event["time"].startswith("2026-01-02T03:04:05")
    assert event["source"] == {"id": source_id}
    assert event["session"] == body["session"] and event["profile"] == body["profile"]
    assert event["metadata"]["status"] == "collected"
    assert event["metadata"]["ip"] == "127.0.0.1"
    assert event["metadata"]["insert"]
    assert event["tenant"] == "default"


# Credentials under names a deny-list would not know, beside the usual ones.
CREDENTIAL_HEADERS = {
    "Authorization": "Bearer top-secret-1",
    "Cookie": "session=top-secret-2",
    "X-Auth-Token": "top-secret-3",
    "Api-Key": "top-secret-4",
    "X-Access-Token": "top-secret-5",
    "X-Custom": "top-secret-6",
}


def test_only_allow_listed_headers_are_stored(
    server: Any, api: httpx.Client, source_id: str
) -> None:
    sent = {
        **CREDENTIAL_HEADERS,
        "User-Agent": "test-agent/1.0",
        "Accept-Language": "de-CH",
        "Referer": "https://shop.example.com/cart",
    }
    tracked = httpx.post(
        f"{server.base_url}/track",
        json={"source": {"id": source_id}, "events": [{"type": "page-view"}]},
        headers=sent,
    )
    collected = httpx.post(
        f"{server.base_url}/collect/webhook-ping/{source_id}", json={"a": 1}, headers=sent
    )
    for answer in (tracked, collected):
        assert answer.status_code == 200, answer.text
        event = api.get(f"/event/{answer.json()['events'][0]}").json()
        headers = event["request"]["headers"]
        assert headers["user-agent"] == "test-agent/1.0"
        assert headers["accept-language"] == "de-CH"
        assert headers["referer"] == "https://shop.example.com/cart"
        assert "top-secret" not in str(event)
        assert not {name.lower() for name in CREDENTIAL_HEADERS} & set(headers)


def test_client_session_id_is_kept_and_reused(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    session_id = f"client-session-{uuid.uuid4()}"
    first = track(anonymous, source_id, session={"id": session_id})
    second = track(anonymous, source_id, session={"id": session_id})
    assert first["session"]["id"] == second["session"]["id"] == session_id
    # Same session, no profile sent: the session's profile is reused.
    assert first["profile"]["id"] == second["profile"]["id"]
    session = api.get(f"/session/{session_id}").json()
    assert session["profile"] == first["profile"] and session["events"] == 2
    profile = api.get(f"/profile/{first['profile']['id']}").json()
    assert (profile["stats"]["visits"], profile["stats"]["events"]) == (1, 2)


def test_known_profile_is_reused_and_new_session_counts_a_visit(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    first = track(anonymous, source_id)
    profile_id = first["profile"]["id"]
    second = track(anonymous, source_id, profile={"id": profile_id})
    assert second["profile"]["id"] == profile_id
    assert second["session"]["id"] != first["session"]["id"]
    profile = api.get(f"/profile/{profile_id}").json()
    assert (profile["stats"]["visits"], profile["stats"]["events"]) == (2, 2)
    assert profile["ids"] == [profile_id]


def test_unknown_profile_id_from_a_server_source_becomes_the_new_profiles_id(
    backend: httpx.Client, api: httpx.Client, server_source: ServerSource
) -> None:
    wanted = f"crm-{uuid.uuid4()}"
    body = track(backend, server_source.id, profile={"id": wanted})
    assert body["profile"]["id"] == wanted
    assert api.get(f"/profile/{wanted}").json()["id"] == wanted


def test_null_or_empty_ids_mean_none_yet(anonymous: httpx.Client, source_id: str) -> None:
    body = track(anonymous, source_id, profile={"id": ""}, session={"id": None})
    assert body["profile"]["id"] and body["session"]["id"]
    body = track(anonymous, source_id, profile=None, session=None)
    assert body["profile"]["id"] and body["session"]["id"]


def test_concurrent_first_requests_of_one_session_make_one_profile(
    server: Any, api: httpx.Client, source_id: str
) -> None:
    session_id = f"race-{uuid.uuid4()}"
    payload = {"source": {"id": source_id}, "session": {"id": session_id}}

    def send(index: int) -> str:
        body = {**payload, "events": [{"type": "page-view", "properties": {"n": index}}]}
        answer = httpx.post(f"{server.base_url}/track", json=body, timeout=30)
        assert answer.status_code == 200
        return str(answer.json()["profile"]["id"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        profiles = set(pool.map(send, range(40)))
    assert len(profiles) == 1
    profile = api.get(f"/profile/{profiles.pop()}").json()
    assert (profile["stats"]["visits"], profile["stats"]["events"]) == (1, 40)
    events = api.get(f"/profile/{profile['id']}/events", params={"limit": 100}).json()
    assert events["total"] == 40
    assert sorted(e["properties"]["n"] for e in events["result"]) == list(range(40))


def test_a_server_sources_event_id_is_kept_and_never_stored_twice(
    backend: httpx.Client, api: httpx.Client, server_source: ServerSource
) -> None:
    event_id = f"evt-{uuid.uuid4()}"
    source_id = server_source.id
    first = track(
        backend, source_id, events=[{"id": event_id, "type": "purchase", "properties": {"v": 1}}]
    )
    assert first["events"] == [event_id]
    again = track(
        backend,
        source_id,
        profile=first["profile"],
        events=[{"id": event_id, "type": "purchase", "properties": {"v": 2}}],
    )
    assert again["events"] == []
    assert any(event_id in warning for warning in again["warnings"])
    assert api.get(f"/event/{event_id}").json()["properties"] == {"v": 1}


def test_batch_of_events_is_stored_in_order(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    events = [{"type": "scroll", "properties": {"i": i}} for i in range(20)]
    body = track(anonymous, source_id, events=events)
    assert len(body["events"]) == 20
    listed = api.get(f"/profile/{body['profile']['id']}/events", params={"limit": 50}).json()
    assert listed["total"] == 20
    assert {e["id"] for e in listed["result"]} == set(body["events"])


def test_cors_preflight_is_answered(anonymous: httpx.Client) -> None:
    answer = anonymous.options(
        "/track",
        headers={"Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "POST" in answer.headers["access-control-allow-methods"]


def test_get_on_track_is_refused(anonymous: httpx.Client) -> None:
    answer = anonymous.get("/track")
    assert answer.status_code == 405
    assert "POST" in answer.json()["detail"]


def test_new_session_is_enriched_from_the_first_request(
    server: Any, api: httpx.Client, source_id: str
) -> None:
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
    )
    answer = httpx.post(
        f"{server.base_url}/track",
        headers={"User-Agent": chrome},
        json={
            "source": {"id": source_id},
            "context": {
                "page": {
                    "url": "https://shop.example.com/?utm_source=news&utm_medium=email&utm_campaign=spring",
                    "referrer": "https://www.google.com/search?q=shoes",
                },
                "time": {"tz": "Europe/Warsaw"},
            },
            "events": [{"type": "page-view"}],
        },
    )
    assert answer.status_code == 200, answer.text
    session = api.get(f"/session/{answer.json()['session']['id']}").json()
    device = session["device"]
    assert device["browser"]["name"] == "Chrome"
    assert device["os"]["name"] == "Windows"
    assert device["device"]["type"] == "desktop"
    assert device["bot"] is False
    assert device["utm"] == {"source": "news", "medium": "email", "campaign": "spring"}
    assert device["referrer"]["host"] == "www.google.com"
    assert device["timezone"] == "Europe/Warsaw"
    assert session["metadata"]["visit"]["number"] == 1


def test_bots_are_recognised(anonymous: httpx.Client, api: httpx.Client, source_id: str) -> None:
    answer = anonymous.post(
        "/track",
        headers={"User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"},
        json={"source": {"id": source_id}, "events": [{"type": "page-view"}]},
    )
    session = api.get(f"/session/{answer.json()['session']['id']}").json()
    assert session["device"]["bot"] is True
