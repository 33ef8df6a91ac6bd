"""The abuse cases of issue 12 in one run, as an attacker with only the public source id would
send them, against one installation per mode: after every attack the server is healthy and a
bystander's profile (made by the shop's own system) is readable, exportable and unchanged.

The single cases are tested more closely elsewhere (test_trust.py, test_public_inputs.py,
test_extreme_values.py, test_profile_bounds.py, test_regex_bounds.py, test_slow_clients.py,
test_throttling.py, test_outbound_policy.py); this suite checks that none of them, one after the
other on one server, harms anyone else.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.modes import server_in_mode
from tests.support.server import RunningServer
from tests.support.sources import ServerSource, keyed, make_server_source

MODES = ["embedded-sync", "distributed-sync"]
HEALTHY_WITHIN_S = 1.0


class Shop:
    """The installation, the attacker's client and the bystander they must not harm."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.api = server.client(server.token())
        assert self.api.post("/event-source", json={"id": "shop", "name": "Shop"}).is_success
        self.backend_source: ServerSource = make_server_source(self.api, "Shop backend")
        self.attacker = server.client()
        self.bystander_email = f"bystander-{uuid.uuid4().hex[:8]}@example.com"
        backend = keyed(server.client(), self.backend_source)
        answer = backend.post(
            "/track",
            json={
                "source": {"id": self.backend_source.id},
                "session": {"id": f"by-{uuid.uuid4().hex}"},
                "events": [
                    {
                        "type": "identify",
                        "properties": {"email": self.bystander_email, "traits": {"tier": "gold"}},
                    },
                    {"type": "purchase", "properties": {"total": 120.5, "order_id": "o-1"}},
                ],
            },
        )
        assert answer.status_code == 200, answer.text
        self.bystander_id: str = answer.json()["profile"]["id"]
        self.bystander = self._read_bystander()

    def _read_bystander(self) -> dict[str, Any]:
        answer = self.api.get(f"/profile/{self.bystander_id}")
        assert answer.status_code == 200, answer.text
        profile: dict[str, Any] = answer.json()
        return profile

    def public_track(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return self.attacker.post(
            "/track", json={"source": {"id": "shop"}, **body}, headers=headers
        )

    def check_nobody_harmed(self, attack: str) -> None:
        started = time.perf_counter()
        health = self.api.get("/health")
        assert health.status_code == 200 and time.perf_counter() - started < HEALTHY_WITHIN_S, (
            attack
        )
        now = self._read_bystander()
        for part in ("stats", "traits", "ids", "consents", "data"):
            assert now[part] == self.bystander[part], (attack, part, now[part])
        export = self.api.get(f"/profile/{self.bystander_id}/export")
        assert export.status_code == 200, (attack, export.text)
        events = self.api.get(f"/profile/{self.bystander_id}/events").json()
        assert events["total"] == 2, (attack, events)
        search = self.api.post("/profiles/search", json={"limit": 5})
        assert search.status_code == 200, (attack, search.text)


@pytest.fixture(params=MODES, scope="module")
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    data_dir: Path = tmp_path_factory.mktemp(request.param) / "data"
    with server_in_mode(request.param, data_dir) as server:
        yield Shop(server)


def _poison_numbers(shop: Shop) -> None:
    for _ in range(2):
        answer = shop.public_track(
            {"events": [{"type": "purchase", "properties": {"total": 1e308}}]}
        )
        assert answer.status_code == 200, answer.text
        assert shop.api.get(f"/profile/{answer.json()['profile']['id']}").status_code == 200


def _take_over_by_email(shop: Shop) -> None:
    answer = shop.public_track(
        {"events": [{"type": "identify", "properties": {"email": shop.bystander_email}}]}
    )
    assert answer.status_code == 200 and answer.json()["profile"]["id"] != shop.bystander_id


def _choose_a_profile_id(shop: Shop) -> None:
    chosen = f"crm-{uuid.uuid4().hex[:8]}"
    answer = shop.public_track({"profile": {"id": chosen}, "events": [{"type": "page-view"}]})
    assert answer.status_code == 200 and answer.json()["profile"]["id"] != chosen
    assert shop.api.get(f"/profile/{chosen}").status_code == 404


def _squat_an_order_id(shop: Shop) -> None:
    answer = shop.public_track({"events": [{"id": "o-2", "type": "purchase"}]})
    assert answer.status_code == 200 and answer.json()["events"] != ["o-2"]


def _merge_everyone_on_a_junk_phone(shop: Shop) -> None:
    first, second = (
        shop.public_track({"events": [{"type": "identify", "properties": {"phone": "-1"}}]})
        for _ in range(2)
    )
    assert first.json()["profile"]["id"] != second.json()["profile"]["id"]


def _huge_traits(shop: Shop) -> None:
    traits = {f"t{n}": "x" * 1000 for n in range(600)}
    answer = shop.public_track({"events": [{"type": "identify", "properties": {"traits": traits}}]})
    assert answer.status_code in (200, 413), answer.text


def _broken_inputs(shop: Shop) -> None:
    lone_surrogate = b'{"source": {"id": "shop"}, "events": [{"type": "a\\ud800"}]}'
    answer = shop.attacker.post(
        "/track", content=lone_surrogate, headers={"Content-Type": "application/json"}
    )
    assert 400 <= answer.status_code < 500, answer.text
    nul = shop.public_track({"events": [{"type": "page\x00view"}]})
    assert nul.status_code == 422, nul.text


def _spoof_the_client_address(shop: Shop) -> None:
    answer = shop.public_track(
        {"events": [{"type": "page-view"}]}, **{"X-Forwarded-For": "203.0.113.7"}
    )
    event = shop.api.get(f"/event/{answer.json()['events'][0]}").json()
    assert event["metadata"]["ip"] != "203.0.113.7"


def _unsigned_webhook_to_the_backend(shop: Shop) -> None:
    answer = shop.attacker.post(f"/collect/order-paid/{shop.backend_source.id}", json={"a": 1})
    assert answer.status_code == 401, answer.text


def _trickle_a_request(shop: Shop) -> None:
    """A client that sends its headers a byte at a time is cut off, not waited for forever."""
    address = urlsplit(shop.server.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as raw:
        raw.sendall(b"POST /track HTTP/1.1\r\nHost: x\r\n")
        raw.settimeout(30)
        deadline = time.monotonic() + 25
        closed = False
        while time.monotonic() < deadline:
            try:
                raw.sendall(b"X")
            except OSError:
                closed = True
                break
            time.sleep(0.5)
        assert closed or raw.recv(1024).startswith(b"HTTP/1.1 408"), "never cut off"


ATTACKS: list[Callable[[Shop], None]] = [
    _poison_numbers,
    _take_over_by_email,
    _choose_a_profile_id,
    _squat_an_order_id,
    _merge_everyone_on_a_junk_phone,
    _huge_traits,
    _broken_inputs,
    _spoof_the_client_address,
    _unsigned_webhook_to_the_backend,
    _trickle_a_request,
]


def test_no_attack_through_the_public_id_harms_anyone_else(shop: Shop) -> None:
    for attack in ATTACKS:
        attack(shop)
        shop.check_nobody_harmed(attack.__name__)
