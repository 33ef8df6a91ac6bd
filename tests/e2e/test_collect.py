"""/collect/{event_type}/{source_id}[/{session_id}]: webhooks and simple integrations."""

from __future__ import annotations

import uuid

import httpx


def test_profile_less_get_takes_query_string(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    answer = anonymous.get(f"/collect/Order Paid/{source_id}", params={"order": "42", "v": "9"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["profile"] is None and body["session"] is None
    event = api.get(f"/event/{body['events'][0]}").json()
    assert event["type"] == "order-paid"
    assert event["properties"] == {"order": "42", "v": "9"}
    assert event["profile"] is None and event["session"] is None
    assert event["metadata"]["profile_less"] is True


def test_post_json_becomes_properties(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    answer = anonymous.post(
        f"/collect/webhook/{source_id}", json={"customer": {"email": "a@example.com"}, "n": 1}
    )
    assert answer.status_code == 200, answer.text
    event = api.get(f"/event/{answer.json()['events'][0]}").json()
    assert event["properties"] == {"customer": {"email": "a@example.com"}, "n": 1}


def test_post_form_becomes_properties(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    answer = anonymous.post(
        f"/collect/form-submit/{source_id}",
        content="name=Ann&topic=a&topic=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200, answer.text
    event = api.get(f"/event/{answer.json()['events'][0]}").json()
    assert event["properties"] == {"name": "Ann", "topic": ["a", "b"]}


def test_with_session_creates_then_reuses_session_and_profile(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    session_id = f"hook-{uuid.uuid4()}"
    first = anonymous.post(f"/collect/signal/{source_id}/{session_id}", json={"a": 1}).json()
    second = anonymous.get(f"/collect/signal/{source_id}/{session_id}?a=2").json()
    assert first["session"]["id"] == second["session"]["id"] == session_id
    assert first["profile"]["id"] == second["profile"]["id"]
    profile = api.get(f"/profile/{first['profile']['id']}").json()
    assert (profile["stats"]["visits"], profile["stats"]["events"]) == (1, 2)


def test_unknown_source_is_refused(anonymous: httpx.Client) -> None:
    answer = anonymous.get("/collect/x/no-such-source")
    assert answer.status_code == 401
    assert "no-such-source" in answer.json()["detail"]


def test_wrong_shape_of_path_is_404(anonymous: httpx.Client, source_id: str) -> None:
    answer = anonymous.get(f"/collect/x/{source_id}/s/extra")
    assert answer.status_code == 404
    assert "/collect/" in answer.json()["detail"]
