"""The pieces behind tests/e2e/test_public_inputs.py, one rule at a time: the client's address
behind proxies, event type characters, template values, public 503 messages and the log of
them, and refused values kept out of validation answers."""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from tessera.api.forwarded import forwarded_client, parse_address
from tessera.api.problems import encodable, validation_problems
from tessera.collect.outage_log import OutageLog
from tessera.core.reshaping import as_text, render
from tessera.errors import Busy, InvalidPayload, StorageUnavailable
from tessera.model.event import checked_event_type, event_type_problem
from tessera.queue.ports import QueueFull, QueueUnavailable
from tessera.storage.redis.outage import unavailable as redis_unavailable
from tessera.storage.sql.outage import unavailable as database_unavailable

TRUSTED = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]
LOCAL = ipaddress.ip_address("127.0.0.1")


# --- the client's address ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7:8080 ", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("unknown", None),
        ("example.com", None),
        ("203.0.113.7\x00", None),
        ("", None),
    ],
)
def test_an_address_of_the_header_is_one_ip_or_nothing(text: str, address: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == address


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("198.51.100.4", ["203.0.113.7"], "198.51.100.4"),  # untrusted peer: header ignored
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["6.6.6.6, 203.0.113.7, 10.0.0.2"], "203.0.113.7"),
        ("127.0.0.1", ["6.6.6.6", "203.0.113.7, 10.0.0.2"], "203.0.113.7"),
        ("127.0.0.1", ["junk, 10.0.0.2"], "10.0.0.2"),
        ("127.0.0.1", ["10.0.0.2, junk"], "127.0.0.1"),
        ("127.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
    ],
)
def test_the_client_is_the_right_most_address_not_of_a_trusted_proxy(
    peer: str, headers: list[str], client: str
) -> None:
    found = forwarded_client(ipaddress.ip_address(peer), headers, TRUSTED)
    assert str(found) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert forwarded_client(LOCAL, ["203.0.113.7"], []) == LOCAL


# --- event types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Page View", "page-view"),
        ("page\nview", "page-view"),  # whitespace of every kind is one dash, as in Tracardi
        ("$pageview", "$pageview"),
        ("checkout.step:2_b", "checkout.step:2_b"),
        ("Zamówienie Opłacone", "zamówienie-opłacone"),
        ("e\u0301", "e\u0301"),  # a combining mark belongs to its letter
    ],
)
def test_event_types_are_normalised_and_kept(raw: str, expected: str) -> None:
    assert checked_event_type(raw, "type") == expected


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("page\x00view", "'\\x00' is not allowed"),
        ("a\x7fb", "'\\x7f' is not allowed"),
        ("a\u200bb", "'\\u200b' is not allowed"),
        ("a/b", "'/' is not allowed"),
        ("<script>", "'<' is not allowed"),
        ("   ", "must not be empty"),
        ("x" * 129, "longer than 128"),
    ],
)
def test_other_event_types_are_refused_naming_the_character(raw: str, words: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        checked_event_type(raw, "events[0].type")
    assert caught.value.message.startswith("events[0].type: ")
    assert words in caught.value.message
    assert event_type_problem(raw.strip().lower()) is not None


# --- template values ------------------------------------------------------------------------

SCOPE: dict[str, Any] = {
    "event": {
        "properties": {
            "items": [{"sku": "A-1", "qty": 2}],
            "customer": {"name": "Zoë"},
            "paid": False,
            "note": None,
            "total": 12.5,
        }
    },
    "session": {},
    "profile": {},
}


@pytest.mark.parametrize(
    ("template", "result"),
    [
        ("Items: {{ event.properties.items }}", 'Items: [{"sku": "A-1", "qty": 2}]'),
        ("{{ event.properties.customer }}!", '{"name": "Zoë"}!'),
        ("{{ event.properties.paid }}/{{ event.properties.note }}", "false/"),
        ("total {{ event.properties.total }}", "total 12.5"),
        ("{{ event.properties.items | map(attribute='sku') }}", ["A-1"]),
        ("{{ event.properties.customer.keys() }}", ["name"]),
        ("k={{ event.properties.customer.items() }}", 'k=[["name", "Zoë"]]'),
        ("{{ event.properties.items | reverse }}", [{"sku": "A-1", "qty": 2}]),
        ("{{ event.properties.items }}", [{"sku": "A-1", "qty": 2}]),
    ],
)
def test_template_values_are_json_data(template: str, result: Any) -> None:
    warnings: list[str] = []
    assert render(template, SCOPE, warnings, "x") == result
    assert warnings == []


@pytest.mark.parametrize(
    "template", ["Items: {{ event.items }}", "{{ (event).items }}", "{{ event.properties.get }}!"]
)
def test_a_method_named_without_a_call_is_a_warning_not_a_repr(template: str) -> None:
    warnings: list[str] = []
    assert render(template, SCOPE, warnings, "properties.summary") is None
    assert len(warnings) == 1 and "is a method, not a value" in warnings[0]
    assert "0x" not in warnings[0]


def test_text_of_values() -> None:
    assert [as_text(value) for value in ("a", None, True, 3, [1, "b"])] == [
        "a",
        "",
        "true",
        "3",
        '[1, "b"]',
    ]


# --- what a public 503 says ---------------------------------------------------------------------


def test_public_messages_name_the_service_and_nothing_else() -> None:
    detailed = "kafka at 127.0.0.1:19093: creating topic t failed (KafkaConnectionError())"
    errors: list[StorageUnavailable] = [
        StorageUnavailable("Elasticsearch (ELASTIC_HOST) could not be read: 10.0.0.9:9200"),
        QueueUnavailable(detailed),
        QueueFull("TESSERA_QUEUE_MAX_BACKLOG_MB reached at 10.0.0.9", retry_after=5),
        redis_unavailable(ConnectionError("Error 111 connecting to 10.0.0.9:6379")),
        database_unavailable(OSError(2003, "Can't connect to MySQL server on '10.0.0.9'")),
    ]
    publics = [error.public_message for error in errors]
    assert publics == [
        "storage is unavailable; retry later",
        "the ingest queue is unavailable; retry later",
        "the ingest queue is full; retry later",
        "the lock and cache store is unavailable; retry later",
        "the configuration store is unavailable; retry later",
    ]
    busy = Busy("the profile is being merged right now; retry")
    assert busy.public_message == busy.message
    assert isinstance(busy, StorageUnavailable)


def test_the_outage_log_writes_each_kind_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outages = OutageLog(logging.getLogger("test.outages"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.outages"):
        for _ in range(5):
            outages.answered_503("/track", QueueUnavailable("kafka at 127.0.0.1:1: down"))
        outages.answered_503("/track", QueueFull("backlog at its limit", retry_after=2))
        now[0] += 11
        outages.answered_503("/collect/a/b", QueueUnavailable("kafka at 127.0.0.1:1: down"))
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "/track: answered 503: kafka at 127.0.0.1:1: down",
        "/track: answered 503: backlog at its limit",
        "/collect/a/b: answered 503: kafka at 127.0.0.1:1: down "
        "(4 more like it since the last report)",
    ]


# --- refused values stay out of validation answers ----------------------------------------------


class _Login(BaseModel):
    username: str
    password: str
    age: int


def test_validation_problems_keep_the_place_and_reason_and_drop_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        # Python's json keeps the lone surrogate JSON's escape made, in the refused value.
        _Login.model_validate(json.loads('{"username": ["\\ud800"], "password": 5, "age": "x"}'))
    found = validation_problems(caught.value.errors())
    assert [problem["loc"] for problem in found] == [["username"], ["password"], ["age"]]
    assert all(set(problem) <= {"type", "loc", "msg", "ctx"} for problem in found)
    json.dumps(found).encode("utf-8")  # encodable, even with the lone surrogate around


def test_encodable_replaces_only_lone_surrogates() -> None:
    assert encodable("plain ü 😀") == "plain ü 😀"
    assert encodable("a\ud800b") == "a\ufffdb"
