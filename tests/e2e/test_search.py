"""POST /profiles/search and /events/search: the condition language over HTTP, on an embedded
server and on a distributed one (Elasticsearch's search fields, storage/elastic/fields.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.modes import server_in_mode
from tests.support.server import RunningServer


@pytest.fixture(scope="module", params=["embedded-sync", "distributed-sync"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """This module's own server in each storage mode (instead of the shared embedded one)."""
    with server_in_mode(request.param, tmp_path_factory.mktemp("search") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def api(server: RunningServer) -> httpx.Client:
    return server.client(server.token())


@pytest.fixture(scope="module")
def anonymous(server: RunningServer) -> httpx.Client:
    return server.client()


@pytest.fixture(scope="module")
def source_id(api: httpx.Client) -> str:
    answer = api.post("/event-source", json={"id": "test-web", "name": "Test website"})
    assert answer.status_code in (200, 201), answer.text
    return str(answer.json()["id"])


@pytest.fixture(scope="module")
def tagged(anonymous: httpx.Client, source_id: str) -> dict[str, Any]:
    """Five profiles of one run, told apart by a unique tag in their events."""
    tag = uuid.uuid4().hex[:12]
    profiles = []
    for index in range(5):
        answer = anonymous.post(
            "/track",
            json={
                "source": {"id": source_id},
                "events": [
                    {
                        "type": "identify",
                        "properties": {
                            "traits": {
                                "run": tag,
                                "rank": index,
                                "plan": "pro" if index % 2 else "free",
                            }
                        },
                    },
                    {"type": "purchase", "properties": {"run": tag, "total": 10 * index}},
                ],
            },
        )
        assert answer.status_code == 200, answer.text
        profiles.append(answer.json()["profile"]["id"])
    return {"tag": tag, "profiles": profiles}


def test_profiles_by_condition_with_precedence(api: httpx.Client, tagged: dict[str, Any]) -> None:
    tag = tagged["tag"]
    where = (
        f"profile@traits.run == '{tag}' AND profile@traits.plan == 'pro' "
        f"OR profile@traits.run == '{tag}' AND profile@traits.rank == 0"
    )
    found = api.post("/profiles/search", json={"where": where}).json()
    assert found["total"] == 3
    assert {p["traits"]["rank"] for p in found["result"]} == {0, 1, 3}


def test_profiles_sorted_and_paged(api: httpx.Client, tagged: dict[str, Any]) -> None:
    where = f"profile@traits.run == '{tagged['tag']}' AND profile@traits.rank BETWEEN 1 AND 4"
    body = {"where": where, "sort": "profile@traits.rank", "order": "asc", "limit": 2, "offset": 1}
    found = api.post("/profiles/search", json=body).json()
    assert found["total"] == 4
    assert [p["traits"]["rank"] for p in found["result"]] == [2, 3]


def test_cursor_pages_cover_everything_once(api: httpx.Client, tagged: dict[str, Any]) -> None:
    where = f"profile@traits.run == '{tagged['tag']}'"
    seen: list[str] = []
    cursor = None
    for _page in range(10):
        body: dict[str, Any] = {"where": where, "limit": 2}
        if cursor:
            body["cursor"] = cursor
        found = api.post("/profiles/search", json=body).json()
        seen += [p["id"] for p in found["result"]]
        cursor = found["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(tagged["profiles"])


def test_events_search(api: httpx.Client, tagged: dict[str, Any]) -> None:
    where = f"event@properties.run == '{tagged['tag']}' AND event@properties.total >= 20"
    found = api.post("/events/search", json={"where": where}).json()
    assert found["total"] == 3
    assert {e["type"] for e in found["result"]} == {"purchase"}


@pytest.mark.parametrize(
    ("where", "column"),
    [
        ("profile@traits.a == ", "20"),
        ("profile@traits.a == 1 AND", "26"),
        ("(profile@traits.a == 1", "23"),
    ],
)
def test_bad_conditions_name_the_position(api: httpx.Client, where: str, column: str) -> None:
    answer = api.post("/profiles/search", json={"where": where})
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "column" in detail and column in detail


def test_wrong_entity_and_bad_cursor_are_422(api: httpx.Client) -> None:
    wrong = api.post("/profiles/search", json={"where": "event@type == 'x'"})
    assert wrong.status_code == 422 and "event@type" in wrong.json()["detail"]
    assert api.post("/profiles/search", json={"cursor": "garbage!"}).status_code == 422
    assert api.post("/profiles/search", json={"sort": "event@time"}).status_code == 422
