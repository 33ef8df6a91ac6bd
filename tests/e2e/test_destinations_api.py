"""Destinations over HTTP, against the real server: create, read, list, replace, patch, toggle,
delete; secret headers never answered; bad input refused with 422 naming the problem; 404 for
what does not exist; the dead-letter and outbox endpoints."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import httpx

from tests.support.outside import recording_http_server

SECRET = "Bearer e2e-secret-value-9f2c"


def unique_id(prefix: str = "dest") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def destination(**fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "CRM webhook",
        "on": "event",
        "url": "https://crm.example.com/hooks/tessera",
        "event_types": ["Purchase", "  sign up "],
        "condition": "event@properties.value > 10",
        "headers": {"X-Source": "tessera"},
        "secret_headers": {"Authorization": SECRET},
        "template": {"email": "{{ profile.data.contact.email.main }}", "kind": "{{ event.type }}"},
    }
    document.update(fields)
    return document


def ok(answer: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert SECRET not in answer.text
    body: dict[str, Any] = answer.json()
    return body


def refused(answer: httpx.Response, *words: str) -> str:
    assert answer.status_code == 422, answer.text
    assert SECRET not in answer.text
    detail = str(answer.json()["detail"])
    for word in words:
        assert word in detail, detail
    return detail


def test_endpoints_need_a_token(anonymous: httpx.Client) -> None:
    for path in ("/destinations", "/destinations/dead-letters", "/destination/x"):
        assert anonymous.get(path).status_code == 401
    assert anonymous.post("/destination", json=destination()).status_code == 401


def test_create_read_list_replace_patch_toggle_delete(api: httpx.Client) -> None:
    destination_id = unique_id()
    created = ok(api.post("/destination", json=destination(id=destination_id)), 201)
    assert created["id"] == destination_id
    assert created["event_types"] == ["purchase", "sign-up"]  # normalised
    assert created["secret_header_names"] == ["Authorization"]
    assert "secret_headers" not in created
    assert created["headers"] == {"X-Source": "tessera"}
    assert (created["method"], created["enabled"], created["max_attempts"]) == ("POST", True, 6)
    assert created["timeout_s"] == 5

    read = ok(api.get(f"/destination/{destination_id}"))
    assert read == created
    listed = ok(api.get("/destinations"))
    assert listed["total"] == len(listed["result"])
    assert destination_id in [item["id"] for item in listed["result"]]

    replaced = ok(
        api.post(
            "/destination",
            json=destination(id=destination_id, name="Renamed", method="PUT", secret_headers={}),
        )
    )
    assert (replaced["name"], replaced["method"]) == ("Renamed", "PUT")
    assert replaced["created"] == created["created"]
    assert replaced["secret_header_names"] == []  # POST replaces everything

    patched = ok(
        api.patch(
            f"/destination/{destination_id}",
            json={"secret_headers": {"X-Api-Key": SECRET}, "condition": None},
        )
    )
    assert patched["secret_header_names"] == ["X-Api-Key"]
    assert patched["condition"] is None
    assert patched["name"] == "Renamed"
    kept = ok(api.patch(f"/destination/{destination_id}", json={"description": "kept secrets"}))
    assert kept["secret_header_names"] == ["X-Api-Key"]  # PATCH keeps them unless given

    assert ok(api.post(f"/destination/{destination_id}/disable"))["enabled"] is False
    assert ok(api.get(f"/destination/{destination_id}"))["enabled"] is False
    assert ok(api.post(f"/destination/{destination_id}/enable"))["enabled"] is True

    deliveries = ok(api.get(f"/destination/{destination_id}/deliveries"))
    assert deliveries == {
        "counts": {"held": 0, "pending": 0, "delivered": 0, "dead": 0},
        "result": [],
    }

    assert api.delete(f"/destination/{destination_id}").status_code == 204
    assert api.get(f"/destination/{destination_id}").status_code == 404
    assert api.delete(f"/destination/{destination_id}").status_code == 404


def test_a_profile_destination_with_a_generated_id(api: httpx.Client) -> None:
    created = ok(
        api.post(
            "/destination",
            json={"name": "Profiles", "on": "profile", "url": "http://127.0.0.1:9/p"},
        ),
        201,
    )
    assert created["id"] and created["on"] == "profile"
    assert (created["event_types"], created["template"], created["condition"]) == ([], None, None)
    assert api.delete(f"/destination/{created['id']}").status_code == 204


def test_bad_destinations_are_refused_naming_the_problem(api: httpx.Client) -> None:
    refused(api.post("/destination", json=destination(url="ftp://example.com/x")), "url")
    refused(api.post("/destination", json=destination(url="not a url")), "url")
    refused(
        api.post("/destination", json=destination(condition="event@properties.value >")),
        "condition",
        "line 1",
    )
    refused(
        api.post("/destination", json=destination(template={"a": "{{ secrets.key }}"})),
        "template.a",
        "secrets",
    )
    refused(
        api.post("/destination", json=destination(template={"a": "{% for x in y %}{% endfor %}"})),
        "template",
    )
    refused(
        api.post("/destination", json=destination(on="profile", event_types=["purchase"])),
        "event_types",
    )
    refused(api.post("/destination", json=destination(event_types=["   "])), "event_types")
    refused(api.post("/destination", json=destination(on="segment")), "'on'")
    refused(api.post("/destination", json=destination(method="DELETE")), "'method'")
    refused(api.post("/destination", json=destination(id="has spaces")), "'id'")
    refused(api.post("/destination", json=destination(timeout_s=600)), "'timeout_s'")
    refused(api.post("/destination", json=destination(max_attempts=0)), "'max_attempts'")
    refused(api.post("/destination", json=destination(headers={"Bad Name": "x"})), "headers")
    refused(api.post("/destination", json=destination(headers={"Host": "x"})), "Host")
    # A misspelt field is refused, naming it but not repeating its value.
    refused(
        api.post("/destination", json=destination(secret_header={"Authorization": SECRET})),
        "unknown field",
        "secret_header",
    )
    refused(
        api.patch("/destination/anything", json={"secret_header": {"Authorization": SECRET}}),
        "unknown field",
    )
    # A refused secret value is not repeated in the answer (refused() checks SECRET is absent).
    refused(
        api.post("/destination", json=destination(secret_headers={"Authorization": [SECRET]})),
        "secret_headers",
    )
    refused(api.post("/destination", json=destination(secret_headers=SECRET)), "secret_headers")
    refused(
        api.post(
            "/destination",
            json=destination(secret_headers={"X-Key": SECRET + "\r\nInjected: yes"}),
        ),
        "secret_headers",
    )
    refused(
        api.post(
            "/destination",
            json=destination(
                headers={"authorization": "public"}, secret_headers={"Authorization": SECRET}
            ),
        ),
        "authorization",
    )


def test_a_patch_is_checked_like_a_new_destination(api: httpx.Client) -> None:
    destination_id = unique_id()
    ok(api.post("/destination", json=destination(id=destination_id)), 201)
    refused(api.patch(f"/destination/{destination_id}", json={"url": "file:///etc/x"}), "url")
    refused(api.patch(f"/destination/{destination_id}", json={"on": "profile"}), "event_types")
    assert ok(api.get(f"/destination/{destination_id}"))["url"].startswith("https://")
    assert api.delete(f"/destination/{destination_id}").status_code == 204


def test_what_does_not_exist_is_404(api: httpx.Client) -> None:
    missing = unique_id("missing")
    assert api.get(f"/destination/{missing}").status_code == 404
    assert api.patch(f"/destination/{missing}", json={"name": "x"}).status_code == 404
    assert api.delete(f"/destination/{missing}").status_code == 404
    assert api.post(f"/destination/{missing}/enable").status_code == 404
    assert api.post(f"/destination/{missing}/disable").status_code == 404
    assert api.get(f"/destination/{missing}/deliveries").status_code == 404
    assert api.get(f"/outbox/{missing}").status_code == 404
    assert api.get(f"/outbox/{missing}/attempts").status_code == 404
    answer = api.post(f"/destinations/dead-letters/{missing}/replay")
    assert answer.status_code == 404
    assert missing in answer.json()["detail"]


def test_dead_letters_are_listed_with_a_total(api: httpx.Client) -> None:
    listed = ok(api.get("/destinations/dead-letters", params={"limit": 5, "offset": 0}))
    assert listed["total"] >= len(listed["result"])
    assert all(item["state"] == "dead" for item in listed["result"])
    assert api.get("/destinations/dead-letters", params={"limit": 0}).status_code == 422


def test_a_new_url_needs_the_secret_headers_sent_again(api: httpx.Client) -> None:
    destination_id = unique_id()
    ok(api.post("/destination", json=destination(id=destination_id)), 201)
    elsewhere = "https://collector.attacker.example.net/steal"
    detail = refused(
        api.patch(f"/destination/{destination_id}", json={"url": elsewhere}),
        "url changed",
        "secret_headers.Authorization",
    )
    assert "again" in detail
    # Sent back as shown, ******** keeps the secret only for the same URL.
    shown = {"secret_headers": {"Authorization": "********"}}
    refused(
        api.post("/destination", json=destination(id=destination_id, url=elsewhere, **shown)),
        "url changed",
        "secret_headers.Authorization",
    )
    assert ok(api.get(f"/destination/{destination_id}"))["url"] == destination()["url"]
    kept = ok(api.post("/destination", json=destination(id=destination_id, name="B", **shown)))
    assert kept["secret_header_names"] == ["Authorization"]
    # With the secret given again, the URL may change.
    moved = ok(
        api.patch(
            f"/destination/{destination_id}",
            json={"url": elsewhere, "secret_headers": {"Authorization": SECRET}},
        )
    )
    assert moved["url"] == elsewhere
    # Nothing stored to keep: refused, not stored as eight stars.
    refused(api.post("/destination", json=destination(**shown)), "no stored secret")
    assert api.delete(f"/destination/{destination_id}").status_code == 204


def test_a_url_password_is_never_answered_and_kept_for_the_same_url(
    api: httpx.Client, server: Any, source_id: str
) -> None:
    with recording_http_server() as receiver:
        url = receiver.url("/hook").replace("http://", "http://shop:url-pass-secret@")
        event_type = unique_id("url-password")
        document = destination(url=url, event_types=[event_type], condition=None)
        created = ok(api.post("/destination", json=document), 201)
        assert created["url"] == url.replace("url-pass-secret", "********")
        assert "url-pass-secret" not in str(ok(api.get("/destinations")))
        # Sent back as shown with another change: the password stays.
        patched = ok(
            api.patch(f"/destination/{created['id']}", json={"url": created["url"], "name": "B"})
        )
        assert patched["url"] == created["url"]
        moved = created["url"].replace("127.0.0.1", "localhost")
        refused(
            api.patch(f"/destination/{created['id']}", json={"url": moved}),
            "url changed",
            "the password in url",
        )
        tracked = httpx.post(
            f"{server.base_url}/track",
            json={"source": {"id": source_id}, "events": [{"type": event_type}]},
        )
        assert tracked.status_code == 200, tracked.text
        deadline = time.monotonic() + 20
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        [request] = receiver.requests
    sent = base64.b64encode(b"shop:url-pass-secret").decode()
    assert request.headers["authorization"] == f"Basic {sent}"
    assert api.delete(f"/destination/{created['id']}").status_code == 204


def test_an_address_the_policy_refuses_is_a_422_when_saved(api: httpx.Client) -> None:
    for url, kind in (
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.8:8080/hook", "private"),
    ):
        detail = refused(api.post("/destination", json=destination(url=url)), "url", kind)
        assert "TESSERA_OUTBOUND_ALLOW_CIDRS" in detail
