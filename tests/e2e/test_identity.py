"""Identity resolution over HTTP: merging on shared e-mails, guard rails, unmerge, privacy.

These requests come from a server source (the operator's own system, proven by its key),
which has the full power of identity resolution; what a public source may do is in
test_trust.py."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import RunningServer, running_server
from tests.support.sources import ServerSource, keyed, make_server_source


def track(client: httpx.Client, source_id: str, **payload: Any) -> dict[str, Any]:
    payload.setdefault("events", [{"type": "page-view"}])
    answer = client.post("/track", json={"source": {"id": source_id}, **payload})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def identify(
    client: httpx.Client, source_id: str, session_id: str, email: str, **traits: Any
) -> dict[str, Any]:
    return track(
        client,
        source_id,
        session={"id": session_id},
        events=[{"type": "identify", "properties": {"email": email, "traits": traits}}],
    )


def new_email() -> str:
    return f"ann.{uuid.uuid4().hex[:10]}@example.com"


def test_two_devices_with_one_email_become_one_profile(
    backend: httpx.Client, api: httpx.Client, server_source: ServerSource
) -> None:
    source_id = server_source.id
    email = new_email()
    laptop = track(backend, source_id, session={"id": f"laptop-{uuid.uuid4()}"})
    laptop_profile = laptop["profile"]["id"]
    identified = identify(backend, source_id, laptop["session"]["id"], email, plan="pro")
    assert identified["profile"]["id"] == laptop_profile

    phone = track(backend, source_id, session={"id": f"phone-{uuid.uuid4()}"})
    phone_profile = phone["profile"]["id"]
    assert phone_profile != laptop_profile
    # The second device identifies with the same address, in another case and with spaces.
    merged = identify(
        backend, source_id, phone["session"]["id"], f"  {email.upper()} ", city="Gdańsk"
    )
    survivor = merged["profile"]["id"]
    assert survivor == laptop_profile  # the older profile survives

    for any_id in (laptop_profile, phone_profile):
        profile = api.get(f"/profile/{any_id}").json()
        assert profile["id"] == survivor
    profile = api.get(f"/profile/{survivor}").json()
    assert set(profile["ids"]) == {laptop_profile, phone_profile}
    assert profile["traits"] == {"plan": "pro", "city": "Gdańsk"}
    assert profile["data"]["contact"]["email"]["main"].strip().lower() == email
    assert profile["stats"]["visits"] == 2
    assert profile["stats"]["events"] == 4
    assert profile["metadata"]["merges"][0]["merged_id"] == phone_profile

    events = api.get(f"/profile/{phone_profile}/events", params={"limit": 50}).json()
    assert events["total"] == 4
    # Later requests from the second device land on the survivor.
    later = track(backend, source_id, profile={"id": phone_profile})
    assert later["profile"]["id"] == survivor


def identify_together(
    base_url: str, source: ServerSource, email: str, sessions: list[str]
) -> list[dict[str, Any]]:
    """Send one identify per session at the same moment (a barrier releases them together)."""
    answers: list[dict[str, Any]] = []
    barrier = threading.Barrier(len(sessions))
    source_id = source.id

    def send(session_id: str) -> None:
        with httpx.Client(base_url=base_url, timeout=30, headers=source.headers) as client:
            barrier.wait()
            answers.append(identify(client, source_id, session_id, email, n=session_id))

    threads = [threading.Thread(target=send, args=(session,)) for session in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_concurrent_identification_never_leaves_two_profiles(
    server: RunningServer, api: httpx.Client, server_source: ServerSource
) -> None:
    for _round in range(15):
        email = new_email()
        sessions = [f"race-a-{uuid.uuid4()}", f"race-b-{uuid.uuid4()}"]
        answers = identify_together(server.base_url, server_source, email, sessions)
        assert len(answers) == 2
        survivors = {api.get(f"/profile/{a['profile']['id']}").json()["id"] for a in answers}
        assert len(survivors) == 1, survivors
        profile = api.get(f"/profile/{survivors.pop()}").json()
        assert profile["stats"]["events"] == 2
        assert profile["stats"]["visits"] == 2
        assert profile["traits"]["n"] in sessions


@pytest.mark.parametrize(
    "value", ["", "null", "None", "undefined", "anonymous", "0", "-1", "000000"]
)
def test_blocked_values_never_merge(
    backend: httpx.Client, api: httpx.Client, server_source: ServerSource, value: str
) -> None:
    source_id = server_source.id
    first = track(
        backend,
        source_id,
        events=[{"type": "identify", "properties": {"customer_id": value}}],
    )
    second = track(
        backend,
        source_id,
        events=[{"type": "identify", "properties": {"customer_id": value}}],
    )
    assert first["profile"]["id"] != second["profile"]["id"]
    assert api.get(f"/profile/{second['profile']['id']}").json()["ids"] == [second["profile"]["id"]]


def test_per_key_limit_keeps_new_values_off(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", {"TESSERA_MERGE_KEY_LIMIT": "2"}) as server:
        api = server.client(server.token())
        source = make_server_source(api, "limit")
        source_id = source.id
        client = keyed(server.client(), source)
        session_id = f"shared-kiosk-{uuid.uuid4()}"
        emails = [new_email() for _ in range(3)]
        answers = [identify(client, source_id, session_id, email) for email in emails]
        assert answers[0]["warnings"] == [] and answers[1]["warnings"] == []
        assert any("2 values" in warning for warning in answers[2]["warnings"])
        profile = api.get(f"/profile/{answers[2]['profile']['id']}").json()
        assert profile["data"]["contact"]["email"]["main"] == emails[1]
        assert len(profile["metadata"]["identity"]["data.contact.email.main"]) == 2
        # The refused address did not join this profile, so it can still identify someone else.
        other = identify(client, source_id, f"other-{uuid.uuid4()}", emails[2])
        assert other["profile"]["id"] != answers[2]["profile"]["id"]


def test_unmerge_splits_the_former_profile_back_out(
    backend: httpx.Client, api: httpx.Client, server_source: ServerSource
) -> None:
    source_id = server_source.id
    email = new_email()
    first = identify(backend, source_id, f"u1-{uuid.uuid4()}", email, plan="pro")
    second_visit = track(
        backend,
        source_id,
        session={"id": f"u2-{uuid.uuid4()}"},
        events=[{"type": "page-view"}, {"type": "page-view"}],
    )
    former_id = second_visit["profile"]["id"]
    merged = identify(backend, source_id, second_visit["session"]["id"], email, city="Oslo")
    survivor_id = merged["profile"]["id"]
    assert survivor_id == first["profile"]["id"]

    answer = api.post(f"/profile/{survivor_id}/unmerge", json={"ids": [former_id]})
    assert answer.status_code == 200, answer.text
    survivor = api.get(f"/profile/{survivor_id}").json()
    former = api.get(f"/profile/{former_id}").json()
    assert former["id"] == former_id and survivor["id"] == survivor_id
    assert former_id not in survivor["ids"]
    assert "city" not in survivor["traits"] and survivor["traits"]["plan"] == "pro"
    former_events = api.get(f"/profile/{former_id}/events").json()
    # Everything its device sent under its id: two page views and the identify that merged it.
    assert former_events["total"] == 3
    assert former["stats"]["visits"] == 1 and former["stats"]["events"] == 3
    assert survivor["stats"]["visits"] == 1
    again = api.post(f"/profile/{survivor_id}/unmerge", json={"ids": [former_id]})
    assert again.status_code == 422


def test_delete_with_data_removes_everything(
    backend: httpx.Client, api: httpx.Client, server_source: ServerSource
) -> None:
    source_id = server_source.id
    email = new_email()
    one = identify(backend, source_id, f"d1-{uuid.uuid4()}", email)
    two = identify(backend, source_id, f"d2-{uuid.uuid4()}", email)
    survivor_id = two["profile"]["id"]
    event_ids = one["events"] + two["events"]
    answer = api.delete(f"/profile/{survivor_id}", params={"with_data": "true"})
    assert answer.status_code == 200, answer.text
    for any_id in {one["profile"]["id"], survivor_id}:
        assert api.get(f"/profile/{any_id}").status_code == 404
    for event_id in event_ids:
        assert api.get(f"/event/{event_id}").status_code == 404
    for session_id in (one["session"]["id"], two["session"]["id"]):
        assert api.get(f"/session/{session_id}").status_code == 404
    # The address is free again: it starts a new profile.
    fresh = identify(backend, source_id, f"d3-{uuid.uuid4()}", email)
    assert fresh["profile"]["id"] not in {one["profile"]["id"], survivor_id}


def test_anonymize_keeps_statistics_only(
    backend: httpx.Client, api: httpx.Client, server_source: ServerSource
) -> None:
    source_id = server_source.id
    body = identify(backend, source_id, f"a-{uuid.uuid4()}", new_email(), name="Ann")
    answer = api.post(f"/profile/{body['profile']['id']}/anonymize")
    assert answer.status_code == 200, answer.text
    profile = api.get(f"/profile/{body['profile']['id']}").json()
    assert profile["traits"] == {} and profile["data"] == {}
    assert profile["metadata"]["identity"] == {}
    assert profile["stats"]["events"] == 1


def test_export_returns_everything_held(
    backend: httpx.Client, api: httpx.Client, server_source: ServerSource
) -> None:
    source_id = server_source.id
    email = new_email()
    one = identify(backend, source_id, f"e1-{uuid.uuid4()}", email, plan="basic")
    visit = track(backend, source_id, session={"id": f"e2-{uuid.uuid4()}"})
    two = identify(backend, source_id, visit["session"]["id"], email)
    export = api.get(f"/profile/{one['profile']['id']}/export").json()
    assert export["profile"]["id"] == one["profile"]["id"]
    assert {e["id"] for e in export["events"]} == set(
        one["events"] + visit["events"] + two["events"]
    )
    assert {s["id"] for s in export["sessions"]} == {one["session"]["id"], two["session"]["id"]}
    assert [p["id"] for p in export["merged_profiles"]] == [visit["profile"]["id"]]
    assert export["profile"]["traits"] == {"plan": "basic"}


def test_consents_follow_their_types(
    backend: httpx.Client, api: httpx.Client, server_source: ServerSource
) -> None:
    source_id = server_source.id
    kind = f"terms-{uuid.uuid4().hex[:8]}"
    api.post("/consent-type", json={"id": kind, "name": "Terms", "revokable": False})
    api.post("/consent-type", json={"id": f"{kind}-news", "name": "News", "revokable": True})
    session = {"id": f"consent-{uuid.uuid4()}"}

    def consent(event_type: str, name: str) -> dict[str, Any]:
        event = {"type": event_type, "properties": {"type": name}}
        return track(backend, source_id, session=session, events=[event])

    consent("consent-granted", kind)
    consent("consent-granted", f"{kind}-news")
    refused = consent("consent-revoked", kind)
    assert any("cannot be revoked" in warning for warning in refused["warnings"])
    consent("consent-revoked", f"{kind}-news")
    consents = api.get(f"/profile/{refused['profile']['id']}").json()["consents"]
    assert consents[kind]["granted"] is True
    assert consents[f"{kind}-news"]["granted"] is False


def test_inactivity_ends_a_visit_but_not_the_session(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", {"CLOSE_VISIT_AFTER": "1"}) as server:
        api = server.client(server.token())
        source_id = api.post("/event-source", json={"name": "visits"}).json()["id"]
        client = server.client()
        session = {"id": f"long-{uuid.uuid4()}"}
        first = track(client, source_id, session=session)
        track(client, source_id, session=session)
        stored = api.get(f"/session/{session['id']}").json()["metadata"]["visit"]
        assert stored["number"] == 1
        time.sleep(1.5)
        track(client, source_id, session=session)
        visit = api.get(f"/session/{session['id']}").json()["metadata"]["visit"]
        assert visit["number"] == 2 and visit["start"] > stored["last"]
        profile = api.get(f"/profile/{first['profile']['id']}").json()
        assert profile["stats"]["visits"] == 1  # one session, counted once
        assert profile["metadata"]["time"]["last_visit"] == visit["start"]
