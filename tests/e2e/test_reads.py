"""The read API: profiles, sessions, events, and their 404s."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize("path", ["/profile/nope", "/session/nope", "/event/nope"])
def test_missing_records_are_404(api: httpx.Client, path: str) -> None:
    answer = api.get(path)
    assert answer.status_code == 404
    assert "nope" in answer.json()["detail"]


def test_profile_events_newest_first_with_type_filter_and_paging(
    anonymous: httpx.Client, api: httpx.Client, source_id: str
) -> None:
    events = [
        {"type": "page-view", "time": f"2026-03-0{day}T10:00:00Z", "properties": {"day": day}}
        for day in range(1, 6)
    ] + [{"type": "purchase", "time": "2026-03-03T12:00:00Z", "properties": {"day": 33}}]
    body = anonymous.post("/track", json={"source": {"id": source_id}, "events": events}).json()
    profile_id = body["profile"]["id"]

    everything = api.get(f"/profile/{profile_id}/events").json()
    assert everything["total"] == 6
    assert [e["properties"]["day"] for e in everything["result"]] == [5, 4, 33, 3, 2, 1]

    views = api.get(f"/profile/{profile_id}/events", params={"type": "Page View"}).json()
    assert views["total"] == 5 and {e["type"] for e in views["result"]} == {"page-view"}

    page = api.get(f"/profile/{profile_id}/events", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 6
    assert [e["properties"]["day"] for e in page["result"]] == [4, 33]


def test_events_of_unknown_profile_are_404(api: httpx.Client) -> None:
    assert api.get("/profile/nobody/events").status_code == 404


def test_health_needs_no_token(anonymous: httpx.Client) -> None:
    answer = anonymous.get("/health").json()
    assert answer["status"] == "ok" and isinstance(answer["process"], int)


def test_openapi_docs_are_served(anonymous: httpx.Client) -> None:
    assert anonymous.get("/docs").status_code == 200
    paths = anonymous.get("/openapi.json").json()["paths"]
    for path in ("/user/token", "/install", "/event-source", "/profile/{profile_id}"):
        assert path in paths
