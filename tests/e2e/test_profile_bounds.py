"""A profile cannot grow without bound (issue 12, "Denial of service"): trait keys, bytes, ids
and merge history stop at their settings; what a request would push past one is refused with
a warning, and the rest of the request is taken."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import RunningServer, running_server
from tests.support.sources import ServerSource, make_server_source

LIMITS = {
    "TESSERA_MAX_PROFILE_TRAITS": "20",
    "TESSERA_MAX_PROFILE_BYTES": "16384",
    "TESSERA_MAX_PROFILE_IDS": "5",
    "TESSERA_MAX_PROFILE_MERGES": "2",
}


@pytest.fixture(scope="module")
def bounded(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, ServerSource]]:
    with running_server(tmp_path_factory.mktemp("bounded") / "data", LIMITS) as server:
        api = server.client(server.token())
        # A server source: its identify merges (a public one's would not, docs/security.md).
        yield server, make_server_source(api, "Backend")


def identify(server: RunningServer, source: ServerSource, **properties: Any) -> dict[str, Any]:
    answer = server.client().post(
        "/track",
        headers=source.headers,
        json={
            "source": {"id": source.id},
            "session": {"id": f"s-{uuid.uuid4().hex}"},
            "events": [{"type": "identify", "properties": properties}],
        },
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_trait_keys_and_bytes_past_the_bounds_are_refused_the_rest_taken(
    bounded: tuple[RunningServer, ServerSource],
) -> None:
    server, source = bounded
    api = server.client(server.token())
    many = {f"t{i}": i for i in range(30)}
    body = identify(server, source, email=f"{uuid.uuid4().hex}@x.io", traits=many)
    refused = [w for w in body["warnings"] if "TESSERA_MAX_PROFILE_TRAITS" in w]
    assert len(refused) == 10, body["warnings"]
    profile = api.get(f"/profile/{body['profile']['id']}").json()
    assert len(profile["traits"]) == 20
    assert profile["data"]["contact"]["email"]["main"].endswith("@x.io")  # the rest taken

    body = identify(server, source, name="Ann", traits={"blob": "x" * 20_000})
    assert any("TESSERA_MAX_PROFILE_BYTES" in w for w in body["warnings"]), body["warnings"]
    profile = api.get(f"/profile/{body['profile']['id']}").json()
    assert "blob" not in profile["traits"] and profile["data"]["pii"]["name"] == "Ann"


def test_ids_and_merge_history_stop_at_their_bounds(
    bounded: tuple[RunningServer, ServerSource],
) -> None:
    server, source = bounded
    api = server.client(server.token())
    email = f"{uuid.uuid4().hex}@x.io"
    answers = [identify(server, source, email=email) for _ in range(6)]
    survivor_id = answers[0]["profile"]["id"]
    assert {a["profile"]["id"] for a in answers[:5]} == {survivor_id}
    survivor = api.get(f"/profile/{survivor_id}").json()
    assert len(survivor["ids"]) == 5
    merges = survivor["metadata"]["merges"]
    assert merges[0]["summary"] is True and merges[0]["count"] == 2
    assert len(merges) == 3 and all("merged_id" in entry for entry in merges[1:])

    # The sixth would take the survivor past 5 ids: not merged, both stay, the answer says so.
    last = answers[5]
    assert last["profile"]["id"] != survivor_id
    assert any("TESSERA_MAX_PROFILE_IDS" in w for w in last["warnings"]), last["warnings"]
    assert survivor_id not in " ".join(last["warnings"])
    assert api.get(f"/profile/{last['profile']['id']}").status_code == 200
    assert api.get(f"/profile/{survivor_id}").json()["ids"] == survivor["ids"]
    # The e-mail still leads to the survivor, not to the sixth profile (merging with that one
    # would be within the bounds): the next newcomer is refused the same way.
    again = identify(server, source, email=email)
    assert again["profile"]["id"] not in (survivor_id, last["profile"]["id"])
    assert any("TESSERA_MAX_PROFILE_IDS" in w for w in again["warnings"]), again["warnings"]
    assert api.get(f"/profile/{survivor_id}/export").status_code == 200
    assert api.delete(f"/profile/{survivor_id}", params={"with_data": "true"}).status_code == 200
