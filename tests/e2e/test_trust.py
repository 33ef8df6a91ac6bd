"""The trust model, black box, as an attacker with only a public source id would try it
(docs/security.md, "Trust model"), in embedded and distributed mode, sync and async.

A public source (a website, an app) is open to anyone; a server source (the operator's own
system) proves its requests with its key and keeps the full power of identity resolution.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tessera.collect.source_keys import sign
from tests.support.modes import is_async, server_in_mode, wait_until_drained
from tests.support.server import RunningServer
from tests.support.sources import ServerSource, keyed, make_server_source

MODES = ["embedded-sync", "distributed-sync", "embedded-async"]


class Installation:
    def __init__(self, server: RunningServer, mode: str) -> None:
        self.server = server
        self.mode = mode
        self.api = server.client(server.token())
        answer = self.api.post("/event-source", json={"id": "site", "name": "Website"})
        assert answer.status_code in (200, 201), answer.text
        self.backend_source = make_server_source(self.api, "Shop backend")
        self.public = server.client()
        self.backend = keyed(server.client(), self.backend_source)

    def track(self, client: httpx.Client, source: str, **body: Any) -> dict[str, Any]:
        body.setdefault("events", [{"type": "page-view"}])
        answer = client.post("/track", json={"source": {"id": source}, **body})
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        self.settle()
        return result

    def visit(self, **body: Any) -> dict[str, Any]:
        """A request of a website's visitor (the public source)."""
        return self.track(self.public, "site", **body)

    def from_backend(self, **body: Any) -> dict[str, Any]:
        """A request of the operator's own system (the server source, with its key)."""
        return self.track(self.backend, self.backend_source.id, **body)

    @property
    def sync(self) -> bool:
        """Sync answers come from the pipeline; async ones are decided at intake, before it
        ran (docs/queue.md, "What the answer promises")."""
        return not is_async(self.mode)

    def resolved(self, profile_id: str) -> str | None:
        """The id of the profile an id leads to (itself, or the profile it was merged into)."""
        found = self.profile(profile_id)
        return str(found["id"]) if found is not None else None

    def settle(self) -> None:
        if is_async(self.mode):
            wait_until_drained(self.api)

    def profile(self, profile_id: str) -> dict[str, Any] | None:
        answer = self.api.get(f"/profile/{profile_id}")
        return answer.json() if answer.status_code == 200 else None


@pytest.fixture(params=MODES, scope="module")
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    data_dir: Path = tmp_path_factory.mktemp(request.param) / "data"
    with server_in_mode(request.param, data_dir) as server:
        yield Installation(server, request.param)


def _identify(email: str, **traits: Any) -> list[dict[str, Any]]:
    return [{"type": "identify", "properties": {"email": email, "traits": traits}}]


def _email() -> str:
    return f"someone.{uuid.uuid4().hex[:10]}@example.com"


def test_a_public_identify_never_joins_another_persons_profile(site: Installation) -> None:
    email = _email()
    victim = site.from_backend(session={"id": f"v-{uuid.uuid4()}"}, events=_identify(email))
    victim_id = victim["profile"]["id"]
    before = site.profile(victim_id)
    assert before is not None

    attack = site.visit(session={"id": f"a-{uuid.uuid4()}"}, events=_identify(email, x="evil"))
    nobody = site.visit(session={"id": f"n-{uuid.uuid4()}"}, events=_identify(_email()))

    assert attack["profile"]["id"] != victim_id
    # Nothing in the answer tells "that address is a customer's" from "nobody has it".
    assert attack["warnings"] == nobody["warnings"] == []
    assert set(attack) == set(nobody)
    after = site.profile(victim_id)
    assert after is not None
    assert after["stats"] == before["stats"] and after["ids"] == before["ids"]
    assert after["traits"] == before["traits"]
    attacker = site.profile(attack["profile"]["id"])
    assert attacker is not None and attacker["id"] != victim_id
    assert attacker["metadata"]["identity"] == {}
    assert (attacker["data"].get("contact") or {}).get("email") in (None, {})
    # The operator's own system has the power: the same address from it merges.
    merged = site.from_backend(
        session={"id": f"b-{uuid.uuid4()}"}, profile=attack["profile"], events=_identify(email)
    )
    assert site.resolved(merged["profile"]["id"]) == victim_id


def test_a_public_request_never_replaces_an_identifier_the_profile_holds(
    site: Installation,
) -> None:
    mine, theirs = _email(), _email()
    first = site.visit(session={"id": f"r-{uuid.uuid4()}"}, events=_identify(mine))
    profile_id = first["profile"]["id"]
    profile = site.profile(profile_id)
    assert profile is not None and profile["metadata"]["identity"]
    # Someone who learnt the profile id tries to put their own address on it.
    taken = site.visit(profile={"id": profile_id}, events=_identify(theirs))
    if site.sync:
        assert any("does not replace an identifier" in w for w in taken["warnings"]), taken
    profile = site.profile(profile_id)
    assert profile is not None
    assert profile["data"]["contact"]["email"]["main"] == mine
    # The address they sent did not join that profile: it is free for whoever owns it.
    other = site.visit(session={"id": f"o-{uuid.uuid4()}"}, events=_identify(theirs))
    assert other["profile"]["id"] != profile_id
    assert site.profile(other["profile"]["id"])["metadata"]["identity"]  # type: ignore[index]


def test_a_public_client_cannot_choose_the_id_of_a_new_profile(site: Installation) -> None:
    chosen = f"crm-{uuid.uuid4()}"
    answer = site.visit(profile={"id": chosen})
    assert answer["profile"]["id"] != chosen
    assert site.profile(chosen) is None
    issued = answer["profile"]["id"]
    assert site.profile(issued) is not None
    # The id Tessera issued is the visitor's: sent back, it finds the same profile.
    again = site.visit(profile={"id": issued}, session={"id": f"next-{uuid.uuid4()}"})
    assert again["profile"]["id"] == issued
    # A server source may import a profile under its own id.
    imported = site.from_backend(profile={"id": chosen})
    assert imported["profile"]["id"] == chosen and site.profile(chosen) is not None


def test_an_erased_profile_never_comes_back(site: Installation) -> None:
    first = site.visit(session={"id": f"e-{uuid.uuid4()}"})
    erased = first["profile"]["id"]
    answer = site.api.delete(f"/profile/{erased}", params={"with_data": "true"})
    assert answer.status_code == 200, answer.text
    # The browser still holds the id and sends it: a new profile, never the erased one. (An
    # async answer is decided before the worker ran: it may name the id, which stays gone.)
    back = site.visit(profile={"id": erased})
    assert site.profile(erased) is None
    server_back = site.from_backend(profile={"id": erased})
    assert site.profile(erased) is None
    if site.sync:
        assert back["profile"]["id"] != erased and server_back["profile"]["id"] != erased
    events = site.api.get(f"/event/{back['events'][0]}").json()
    assert events["profile"]["id"] != erased


def test_a_public_request_does_not_move_a_session_to_another_profile(
    site: Installation,
) -> None:
    session = f"s-{uuid.uuid4()}"
    owner = site.visit(session={"id": session})["profile"]["id"]
    other = site.visit(session={"id": f"x-{uuid.uuid4()}"})["profile"]["id"]
    moved = site.visit(session={"id": session}, profile={"id": other})
    if site.sync:
        assert moved["profile"]["id"] == owner
    assert site.api.get(f"/session/{session}").json()["profile"]["id"] == owner
    assert site.api.get(f"/event/{moved['events'][0]}").json()["profile"]["id"] == owner


def test_a_public_event_id_cannot_take_a_server_events_id(site: Installation) -> None:
    order = f"order-{uuid.uuid4().hex[:8]}"
    early = site.visit(events=[{"id": order, "type": "purchase", "properties": {"total": 1}}])
    assert early["events"] != [order]
    real = site.from_backend(
        events=[{"id": order, "type": "purchase", "properties": {"total": 99}}]
    )
    assert real["events"] == [order]
    assert site.api.get(f"/event/{order}").json()["properties"] == {"total": 99}
    # The public client's retry of its own event still stores it once.
    retry = site.visit(
        profile=early["profile"],
        events=[{"id": order, "type": "purchase", "properties": {"total": 1}}],
    )
    if site.sync:
        assert retry["events"] == [] and retry["warnings"]
    stored = site.api.get(f"/profile/{early['profile']['id']}/events").json()
    assert [event["id"] for event in stored["result"]] == early["events"]


def test_a_server_source_takes_only_requests_that_prove_its_key(site: Installation) -> None:
    source = site.backend_source
    body = {"source": {"id": source.id}, "events": [{"type": "page-view"}]}
    anonymous = site.server.client()
    assert anonymous.post("/track", json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    assert anonymous.post("/track", json=body, headers=wrong).status_code == 401
    assert anonymous.post("/track", json=body, headers=source.headers).status_code == 200
    # The key is never shown again.
    shown = site.api.get(f"/event-source/{source.id}").json()
    assert "key" not in shown and shown["has_key"] is True
    assert source.key not in site.api.get("/event-sources").text

    # A webhook signs its body instead; an old signature or a changed body is refused.
    target = f"/collect/order-paid/{source.id}"
    payload = b'{"order": 42}'
    now = int(time.time())
    for signed_at, sent, expected in (
        (now, payload, 200),
        (now - 3600, payload, 401),
        (now, b'{"order": 43}', 401),
    ):
        signature = sign(source.key, signed_at, target.encode(), payload)
        answer = anonymous.post(
            target,
            content=sent,
            headers={"X-Tessera-Signature": signature, "Content-Type": "application/json"},
        )
        assert answer.status_code == expected, (signed_at, sent, answer.text)

    # A new key: the old one stops working at once.
    rotated = site.api.post(f"/event-source/{source.id}/key")
    assert rotated.status_code == 200, rotated.text
    new = ServerSource(source.id, rotated.json()["key"])
    assert anonymous.post("/track", json=body, headers=source.headers).status_code == 401
    assert anonymous.post("/track", json=body, headers=new.headers).status_code == 200
    site.backend_source = new
    site.backend = keyed(site.server.client(), new)


def test_an_opted_in_public_merge_answers_the_visitors_own_id(site: Installation) -> None:
    answer = site.api.post(
        "/event-source", json={"id": "site-merging", "name": "Merging site", "public_merge": True}
    )
    assert answer.status_code in (200, 201), answer.text
    email = _email()
    owner = site.from_backend(session={"id": f"m-{uuid.uuid4()}"}, events=_identify(email))
    owner_id = owner["profile"]["id"]
    visitor = site.track(site.public, "site-merging", session={"id": f"mv-{uuid.uuid4()}"})
    merged = site.track(
        site.public, "site-merging", profile=visitor["profile"], events=_identify(email)
    )
    # Merged (the operator chose it for this source), yet the answer names the visitor's own
    # id, which now leads to the merged profile: never the other person's id.
    assert merged["profile"]["id"] == visitor["profile"]["id"] != owner_id
    survivor = site.profile(visitor["profile"]["id"])
    assert survivor is not None and survivor["id"] == owner_id
