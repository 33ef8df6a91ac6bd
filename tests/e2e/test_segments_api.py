"""Segments over HTTP: management, validation, and re-segmentation jobs over profiles that
/track made.

Profiles get their traits from the built-in ``identify`` event (``properties.traits`` lands
in ``profile.traits``); each test uses its own cohort value so that the profiles of other tests
on the shared server never match its segments.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

JOB_DEADLINE_S = 30.0


def cohort() -> str:
    return uuid.uuid4().hex[:12]


def identify(client: httpx.Client, source_id: str, **traits: Any) -> str:
    answer = client.post(
        "/track",
        json={
            "source": {"id": source_id},
            "events": [{"type": "identify", "properties": {"traits": traits}}],
        },
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["profile"]["id"])


def finished(api: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    """Poll the job until it has ended (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + JOB_DEADLINE_S
    while True:
        answer = api.get(f"/segment-jobs/{job['id']}")
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()
        if state["state"] != "running":
            return state
        if time.monotonic() > deadline:
            pytest.fail(f"job {job['id']} still running after {JOB_DEADLINE_S} s: {state}")
        time.sleep(0.05)


def segments_of(api: httpx.Client, profile_id: str) -> list[str]:
    answer = api.get(f"/profile/{profile_id}")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["segments"])


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = api.post("/segment", json=body)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def test_endpoints_need_a_token(anonymous: httpx.Client) -> None:
    assert anonymous.get("/segments").status_code == 401
    assert anonymous.post("/segment", json={}).status_code == 401
    assert anonymous.get("/segment-jobs").status_code == 401


def test_a_new_segment_gathers_the_matching_profiles(
    api: httpx.Client, anonymous: httpx.Client, source_id: str
) -> None:
    mine, other = cohort(), cohort()
    inside = [identify(anonymous, source_id, cohort=mine, plan="pro") for _ in range(3)]
    outside = identify(anonymous, source_id, cohort=other, plan="pro")
    segment_id = f"pro-{mine}"

    created = create(
        api,
        id=segment_id,
        name="Pro users",
        condition=f"profile@traits.cohort == '{mine}' AND profile@traits.plan == 'pro'",
        event_types=[" Identify ", "identify", "Page View"],
    )
    assert created["event_types"] == ["identify", "page-view"]
    assert (created["version"], created["enabled"]) == (1, True)
    job = finished(api, created["job"])
    assert job["state"] == "done" and job["segment_id"] == segment_id
    assert job["entered"] == 3 and job["processed"] >= 4 and job["total"] >= 4

    for profile_id in inside:
        assert segment_id in segments_of(api, profile_id)
    assert segment_id not in segments_of(api, outside)
    history = api.get(f"/profile/{inside[0]}/events", params={"type": "segment-entered"}).json()
    assert [e["properties"] for e in history["result"]] == [
        {"segment": segment_id, "name": "Pro users"}
    ]
    assert any(j["id"] == job["id"] for j in api.get("/segment-jobs").json()["result"])

    # Narrowing the condition takes two of them out again.
    patched = api.patch(
        f"/segment/{segment_id}", json={"condition": f"profile@traits.cohort == '{other}'"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] == 2
    job = finished(api, patched.json()["job"])
    assert (job["state"], job["entered"], job["left"]) == ("done", 1, 3)
    assert all(segment_id not in segments_of(api, p) for p in inside)
    assert segment_id in segments_of(api, outside)

    # Disabling takes the id off; enabling puts it back.
    disabled = api.post(f"/segment/{segment_id}/disable")
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert finished(api, disabled.json()["job"])["left"] == 1
    assert segment_id not in segments_of(api, outside)
    assert api.post(f"/segment/{segment_id}/disable").json()["job"] is None
    enabled = api.post(f"/segment/{segment_id}/enable")
    assert finished(api, enabled.json()["job"])["entered"] == 1
    assert segment_id in segments_of(api, outside)

    # Deleting takes it off every profile.
    deleted = api.delete(f"/segment/{segment_id}")
    assert deleted.status_code == 200, deleted.text
    assert finished(api, deleted.json()["job"])["left"] == 1
    assert segment_id not in segments_of(api, outside)
    assert api.get(f"/segment/{segment_id}").status_code == 404


def test_create_read_list_replace_and_resegment(api: httpx.Client) -> None:
    segment_id = f"seg-{cohort()}"
    created = create(api, id=segment_id, name="A", condition="profile@traits.x == 1")
    finished(api, created["job"])
    assert api.get(f"/segment/{segment_id}").json()["name"] == "A"
    assert segment_id in [s["id"] for s in api.get("/segments").json()["result"]]

    replaced = api.post(
        "/segment", json={"id": segment_id, "name": "B", "condition": "profile@traits.x == 2"}
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["version"], replaced.json()["created"]) == (2, created["created"])
    finished(api, replaced.json()["job"])

    again = api.post(f"/segment/{segment_id}/resegment")
    assert again.status_code == 202, again.text
    assert finished(api, again.json())["state"] == "done"
    every = api.post("/segments/resegment")
    assert every.status_code == 202 and every.json()["segment_id"] is None
    assert finished(api, every.json())["state"] == "done"

    generated = create(api, name="No id", condition="profile@stats.visits > 100")
    assert generated["id"] and api.get(f"/segment/{generated['id']}").status_code == 200
    finished(api, generated["job"])
    assert api.delete(f"/segment/{generated['id']}").status_code == 200


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"name": "x", "condition": "profile@traits.a =="}, "line 1, column"),
        ({"name": "x", "condition": "event@type == 'page-view'"}, "event@type"),
        ({"name": "x", "condition": "profile@traits.a == 1 OR session@id EXISTS"}, "session@id"),
        ({"name": "x", "condition": ""}, "condition"),
        ({"name": "x", "condition": "profile@traits.a == 1", "id": "a/b"}, "id"),
        ({"name": "x", "condition": "profile@traits.a == 1", "event_types": ["  "]}, "event_types"),
        ({"condition": "profile@traits.a == 1"}, "name"),
    ],
)
def test_bad_segments_are_refused(api: httpx.Client, body: dict[str, Any], named: str) -> None:
    answer = api.post("/segment", json=body)
    assert answer.status_code == 422, answer.text
    assert named in answer.text


def test_a_bad_patch_is_refused_and_changes_nothing(api: httpx.Client) -> None:
    segment_id = f"seg-{cohort()}"
    finished(api, create(api, id=segment_id, name="A", condition="profile@traits.x == 1")["job"])
    answer = api.patch(f"/segment/{segment_id}", json={"condition": "event@type == 'x'"})
    assert answer.status_code == 422 and "profile@" in answer.text
    stored = api.get(f"/segment/{segment_id}").json()
    assert (stored["condition"], stored["version"]) == ("profile@traits.x == 1", 1)


def test_unknown_segments_and_jobs_are_404(api: httpx.Client) -> None:
    missing = f"missing-{cohort()}"
    assert api.get(f"/segment/{missing}").status_code == 404
    assert api.patch(f"/segment/{missing}", json={"name": "x"}).status_code == 404
    assert api.delete(f"/segment/{missing}").status_code == 404
    assert api.post(f"/segment/{missing}/enable").status_code == 404
    assert api.post(f"/segment/{missing}/resegment").status_code == 404
    assert api.get(f"/segment-jobs/{missing}").status_code == 404


def test_tracking_puts_a_profile_into_a_segment_live(
    api: httpx.Client, anonymous: httpx.Client, source_id: str
) -> None:
    """Needs LiveSegments wired into the ingest path (the lead's part)."""
    mine = cohort()
    segment_id = f"live-{mine}"
    finished(
        api,
        create(api, id=segment_id, name="Live", condition=f"profile@traits.cohort == '{mine}'")[
            "job"
        ],
    )
    profile_id = identify(anonymous, source_id, cohort=mine)
    assert segment_id in segments_of(api, profile_id)
    history = api.get(f"/profile/{profile_id}/events", params={"type": "segment-entered"}).json()
    assert [e["properties"] for e in history["result"]] == [{"segment": segment_id, "name": "Live"}]
