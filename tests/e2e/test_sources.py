"""Event sources over the management API, and their effect on collection."""

from __future__ import annotations

import uuid

import httpx


def test_create_read_list_replace_delete(api: httpx.Client) -> None:
    source_id = f"site-{uuid.uuid4().hex[:8]}"
    created = api.post(
        "/event-source",
        json={"id": source_id, "name": "Shop", "description": "web shop", "tags": ["web"]},
    )
    assert created.status_code == 201, created.text
    assert created.json()["enabled"] is True and created.json()["type"] == "rest"
    assert api.get(f"/event-source/{source_id}").json()["name"] == "Shop"
    listed = api.get("/event-sources").json()
    assert source_id in [source["id"] for source in listed["result"]]
    assert listed["total"] == len(listed["result"])

    replaced = api.post("/event-source", json={"id": source_id, "name": "Shop 2"})
    assert replaced.status_code == 200
    assert replaced.json()["created"] == created.json()["created"]
    assert api.get(f"/event-source/{source_id}").json()["name"] == "Shop 2"

    assert api.delete(f"/event-source/{source_id}").status_code == 204
    assert api.get(f"/event-source/{source_id}").status_code == 404
    assert api.delete(f"/event-source/{source_id}").status_code == 404


def test_generated_id_when_none_given(api: httpx.Client) -> None:
    created = api.post("/event-source", json={"name": "App"}).json()
    assert uuid.UUID(created["id"])


def test_disable_then_enable_controls_collection(
    api: httpx.Client, anonymous: httpx.Client
) -> None:
    source_id = api.post("/event-source", json={"name": "Toggle"}).json()["id"]
    payload = {"source": {"id": source_id}, "events": [{"type": "page-view"}]}
    assert anonymous.post("/track", json=payload).status_code == 200

    assert (
        api.patch(f"/event-source/{source_id}", json={"enabled": False}).json()["enabled"] is False
    )
    refused = anonymous.post("/track", json=payload)
    assert refused.status_code == 401
    assert "disabled" in refused.json()["detail"]
    assert anonymous.get(f"/collect/x/{source_id}").status_code == 401

    api.patch(f"/event-source/{source_id}", json={"enabled": True})
    assert anonymous.post("/track", json=payload).status_code == 200


def test_deleted_source_is_refused_at_once(api: httpx.Client, anonymous: httpx.Client) -> None:
    source_id = api.post("/event-source", json={"name": "Gone"}).json()["id"]
    payload = {"source": {"id": source_id}, "events": [{"type": "page-view"}]}
    assert anonymous.post("/track", json=payload).status_code == 200
    api.delete(f"/event-source/{source_id}")
    refused = anonymous.post("/track", json=payload)
    assert refused.status_code == 401
    assert "does not exist" in refused.json()["detail"]


def test_bad_source_bodies_are_422(api: httpx.Client) -> None:
    assert api.post("/event-source", json={"id": "a b", "name": "x"}).status_code == 422
    assert api.post("/event-source", json={"name": ""}).status_code == 422
    assert api.patch("/event-source/missing", json={"enabled": False}).status_code == 404


def test_default_source_exists_in_development(api: httpx.Client) -> None:
    names = [source["name"] for source in api.get("/event-sources").json()["result"]]
    assert "Default source" in names


def test_consent_types_crud(api: httpx.Client) -> None:
    body = {"id": "marketing-email", "name": "Marketing e-mail", "revokable": True}
    created = api.post("/consent-type", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["default"] == "deny" and created.json()["required"] is False
    replaced = api.post("/consent-type", json={**body, "required": True, "default": "grant"})
    assert replaced.status_code == 200
    assert replaced.json()["created"] == created.json()["created"]
    assert api.get("/consent-type/marketing-email").json()["required"] is True
    listed = api.get("/consent-types").json()
    assert "marketing-email" in [c["id"] for c in listed["result"]]
    assert api.post("/consent-type", json={**body, "id": "Bad Id"}).status_code == 422
    assert api.post("/consent-type", json={**body, "default": "maybe"}).status_code == 422
    assert api.delete("/consent-type/marketing-email").status_code == 204
    assert api.get("/consent-type/marketing-email").status_code == 404
