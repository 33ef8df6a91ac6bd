"""Destinations end to end below the API: which destinations a request's documents reach, the
bodies they get, and the worker delivering them to a real local HTTP server with retries,
dead letters and replay, over a real SQLite outbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tessera.core.backoff import backoff_delay
from tessera.destinations.checks import check_destination
from tessera.destinations.dispatch import DestinationDispatcher
from tessera.destinations.worker import DeliveryWorker
from tessera.errors import InvalidPayload
from tessera.model.common import new_id
from tessera.model.destination import Destination, OutboxMessage
from tessera.outbound.network import outbound_client
from tessera.outbound.policy import OutboundPolicy
from tessera.runtime import build_runtime
from tessera.settings import load_settings
from tessera.storage.sql.destinations import SqlOutboxStore, sql_destination_store
from tessera.storage.sql.documents import SqlDocumentStore
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.stores import SqlSchemaStore
from tests.support.outside import Reply, recording_http_server
from tests.support.server import free_port

TENANT = "acme"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "Bearer very-secret-token-123"

PROFILE = {
    "id": "p-1",
    "traits": {"tier": "gold"},
    "data": {"contact": {"email": {"main": "ann@example.com"}}},
}
SESSION = {"id": "s-1", "context": {"browser": "firefox"}}


def event(event_id: str, event_type: str, valid: bool = True, **properties: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": event_type,
        "properties": properties,
        "metadata": {"valid": valid},
    }


def destination(destination_id: str, **fields: Any) -> Destination:
    fields.setdefault("on", "event")
    fields.setdefault("url", "http://127.0.0.1:9/hook")
    return Destination(tenant=TENANT, id=destination_id, name=destination_id, created=T0, **fields)


@dataclass
class Stores:
    destinations: SqlDocumentStore[Destination]
    outbox: SqlOutboxStore


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    engine = sqlite_engine(tmp_path / "config")
    await SqlSchemaStore(engine).create_schema()
    yield Stores(sql_destination_store(engine), SqlOutboxStore(engine))
    await engine.dispose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


MakeWorker = Callable[..., DeliveryWorker]


@pytest.fixture
async def make_worker(stores: Stores, http: httpx.AsyncClient) -> AsyncIterator[MakeWorker]:
    started: list[DeliveryWorker] = []

    def make(poll_interval_s: float = 0.05) -> DeliveryWorker:
        worker = DeliveryWorker(
            stores.outbox,
            stores.destinations,
            http,
            poll_interval_s=poll_interval_s,
            backoff_base_s=0.01,
            backoff_max_s=0.04,
            concurrency=4,
        )
        started.append(worker)
        return worker

    yield make
    for worker in started:
        await worker.stop()


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail after a generous deadline (not a speed test)."""
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        await asyncio.sleep(0.02)


async def plan_and_keep(
    dispatcher: DestinationDispatcher,
    stores: Stores,
    events: list[dict[str, Any]],
    *,
    profile_changed: bool = False,
    wake: Callable[[], None] | None = None,
) -> list[OutboxMessage]:
    """Plan the messages and keep them in the outbox, as a committed request does."""
    messages = await dispatcher.plan(
        TENANT,
        events=events,
        profile=PROFILE,
        session=SESSION,
        profile_changed=profile_changed,
        request=new_id(),
    )
    await stores.outbox.add(messages)
    if wake is not None:
        wake()
    return messages


# --- Planning ---------------------------------------------------------------------------------


async def test_plan_picks_destinations_by_type_condition_and_profile_change(
    stores: Stores,
) -> None:
    for item in (
        destination("purchases", event_types=["purchase"]),
        destination("big-spenders", condition="event@properties.value > 10"),
        destination("profiles", on="profile", condition="profile@traits.tier == 'gold'"),
        destination("silver-profiles", on="profile", condition="profile@traits.tier == 'silver'"),
        destination("switched-off", enabled=False),
    ):
        await stores.destinations.save(item)
    dispatcher = DestinationDispatcher(stores.destinations, ttl_s=60)
    events = [
        event("e1", "purchase", value=5),
        event("e2", "page-view", value=20),
        event("e3", "purchase", valid=False, value=50),  # invalid events are not sent
    ]

    unchanged = await dispatcher.plan(
        TENANT,
        events=events,
        profile=PROFILE,
        session=SESSION,
        profile_changed=False,
        request="r-1",
    )
    assert sorted((m.destination_id, m.event_id) for m in unchanged) == [
        ("big-spenders", "e2"),
        ("purchases", "e1"),
    ]
    assert all(m.profile_id == "p-1" and m.state == "pending" for m in unchanged)

    changed = await dispatcher.plan(
        TENANT, events=events, profile=PROFILE, session=SESSION, profile_changed=True, request="r-1"
    )
    assert sorted((m.destination_id, m.event_id) for m in changed) == [
        ("big-spenders", "e2"),
        ("profiles", "e3"),  # the request's last event
        ("purchases", "e1"),
    ]
    assert (
        await dispatcher.plan(
            "other-tenant",
            events=events,
            profile=PROFILE,
            session=SESSION,
            profile_changed=True,
            request="r-1",
        )
        == []
    )


async def test_bodies_are_the_documents_or_the_rendered_template(stores: Stores) -> None:
    await stores.destinations.save(destination("plain", event_types=["purchase"]))
    await stores.destinations.save(
        destination(
            "shaped",
            event_types=["purchase"],
            template={
                "email": "{{ profile.data.contact.email.main }}",
                "what": "{{ event.type }}",
                "text": "Bought for {{ event.properties.value }}",
                "browser": "{{ session.context.browser }}",
                "items": ["{{ event.properties.value * 2 }}", 7],
            },
        )
    )
    await stores.destinations.save(destination("profile-plain", on="profile"))
    dispatcher = DestinationDispatcher(stores.destinations, ttl_s=60)
    purchase = event("e1", "purchase", value=21)
    messages = await dispatcher.plan(
        TENANT,
        events=[purchase],
        profile=PROFILE,
        session=SESSION,
        profile_changed=True,
        request="r-1",
    )
    bodies = {m.destination_id: m.body for m in messages}
    assert bodies["plain"] == {"event": purchase, "profile": PROFILE}
    assert bodies["shaped"] == {
        "email": "ann@example.com",
        "what": "purchase",
        "text": "Bought for 21",
        "browser": "firefox",
        "items": [42, 7],
    }
    assert bodies["profile-plain"] == {"profile": PROFILE}
    # The body is a copy: the ingest path may change its documents afterwards.
    purchase["properties"]["value"] = 0
    assert bodies["plain"]["event"]["properties"]["value"] == 21


async def test_destinations_are_cached_until_forgotten(stores: Stores) -> None:
    dispatcher = DestinationDispatcher(stores.destinations, ttl_s=3600)
    assert (
        await dispatcher.plan(
            TENANT,
            events=[event("e1", "purchase")],
            profile=None,
            session=None,
            profile_changed=False,
            request="r-1",
        )
        == []
    )
    await stores.destinations.save(destination("new"))
    # Still the cached (empty) list: no configuration query per request.
    assert (
        await dispatcher.plan(
            TENANT,
            events=[event("e2", "purchase")],
            profile=None,
            session=None,
            profile_changed=False,
            request="r-1",
        )
        == []
    )
    dispatcher.forget(TENANT)
    planned = await dispatcher.plan(
        TENANT,
        events=[event("e3", "purchase")],
        profile=None,
        session=None,
        profile_changed=False,
        request="r-1",
    )
    assert [(m.destination_id, m.event_id, m.profile_id) for m in planned] == [("new", "e3", None)]


async def test_a_retry_plans_the_same_messages_and_keeping_them_again_changes_nothing(
    stores: Stores,
) -> None:
    await stores.destinations.save(destination("purchases", event_types=["purchase"]))
    await stores.destinations.save(destination("profiles", on="profile"))
    dispatcher = DestinationDispatcher(stores.destinations, ttl_s=60)

    def plan(request: str) -> Any:
        return dispatcher.plan(
            TENANT,
            events=[event("e1", "purchase")],
            profile=PROFILE,
            session=SESSION,
            profile_changed=True,
            request=request,
        )

    first, retry, other = await plan("r-1"), await plan("r-1"), await plan("r-2")
    assert [m.id for m in first] == [m.id for m in retry]
    await stores.outbox.add(first)
    await stores.outbox.add(retry)  # a retry keeps the same messages again: no error, no copy
    counts = await stores.outbox.counts(TENANT)
    assert counts["pending"] == 2
    # A message about the event is the same whichever request carries it; a profile change
    # is one message per request.
    by_destination = {m.destination_id: m.id for m in other}
    assert by_destination["purchases"] == {m.destination_id: m.id for m in first}["purchases"]
    assert by_destination["profiles"] != {m.destination_id: m.id for m in first}["profiles"]


def test_destinations_that_could_never_work_are_refused() -> None:
    check_destination(destination("fine", condition="event@type == 'x'", template={"a": 1}))
    for bad, problem in (
        (destination("ftp", url="ftp://example.com/x"), "url"),
        (destination("nohost", url="http:///path"), "url"),
        (destination("cond", condition="event@type =="), "condition"),
        (destination("tpl", template={"a": "{{ secrets.x }}"}), "template.a"),
        (destination("types", on="profile", event_types=["purchase"]), "event_types"),
        (destination("hdr", headers={"Bad Name": "x"}), "headers"),
        (destination("crlf", secret_headers={"X-Key": "a\r\nInjected: 1"}), "secret_headers"),
        (
            destination(
                "twice", headers={"authorization": "a"}, secret_headers={"Authorization": "b"}
            ),
            "authorization",
        ),
    ):
        with pytest.raises(InvalidPayload) as caught:
            check_destination(bad)
        assert problem in caught.value.message, (bad.id, caught.value.message)
        # A refused secret value is never repeated.
        assert "Injected" not in caught.value.message


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    assert backoff_delay(1, 2, 600, rand=lambda: 1.0) == 2
    assert backoff_delay(1, 2, 600, rand=lambda: 0.0) == 1
    assert backoff_delay(4, 2, 600, rand=lambda: 1.0) == 16
    assert backoff_delay(30, 2, 600, rand=lambda: 1.0) == 600
    assert backoff_delay(10_000, 2, 600, rand=lambda: 0.0) == 300


# --- Delivery ---------------------------------------------------------------------------------


async def message_state(stores: Stores, message_id: str) -> str | None:
    message = await stores.outbox.get(TENANT, message_id)
    return message.state if message is not None else None


async def test_worker_delivers_body_and_headers_including_the_secret(
    stores: Stores, make_worker: MakeWorker
) -> None:
    with recording_http_server() as receiver:
        await stores.destinations.save(
            destination(
                "crm",
                url=receiver.url("/hooks/crm?x=1"),
                method="PUT",
                event_types=["purchase"],
                headers={"X-Source": "tessera-test"},
                secret_headers={"Authorization": SECRET},
                template={"email": "{{ profile.data.contact.email.main }}", "n": 1},
            )
        )
        # A long poll: delivery can only be prompt because keeping the messages wakes it.
        worker = make_worker(poll_interval_s=60)
        dispatcher = DestinationDispatcher(stores.destinations, ttl_s=60)
        await worker.start()
        await asyncio.sleep(0)  # let the worker reach its (long) wait first
        [message] = await plan_and_keep(
            dispatcher, stores, [event("e1", "purchase", value=3)], wake=worker.wake
        )

        await eventually(lambda: _is(stores, message.id, "delivered"))
        [request] = receiver.requests
        assert request.method == "PUT"
        assert request.path == "/hooks/crm?x=1"
        assert request.json() == {"email": "ann@example.com", "n": 1}
        assert request.headers["authorization"] == SECRET
        assert request.headers["x-source"] == "tessera-test"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-tessera-message-id"] == message.id
        [attempt] = await stores.outbox.attempts(TENANT, message.id)
        assert (attempt.number, attempt.status, attempt.error) == (1, 200, None)
        assert attempt.duration_ms >= 0
        stored = await stores.outbox.get(TENANT, message.id)
        assert stored is not None and (stored.attempts, stored.last_status) == (1, 200)


async def _is(stores: Stores, message_id: str, state: str) -> bool:
    return await message_state(stores, message_id) == state


async def test_failures_are_retried_then_dead_lettered_and_replay_delivers(
    stores: Stores, make_worker: MakeWorker
) -> None:
    with recording_http_server(default=Reply(500, "database is down")) as receiver:
        await stores.destinations.save(
            destination("flaky", url=receiver.url("/hook"), max_attempts=3)
        )
        worker = make_worker()
        dispatcher = DestinationDispatcher(stores.destinations, ttl_s=60)
        await worker.start()
        [message] = await plan_and_keep(
            dispatcher, stores, [event("e1", "signup")], wake=worker.wake
        )

        await eventually(lambda: _is(stores, message.id, "dead"))
        assert len(receiver.requests) == 3
        assert all(r.json()["event"]["id"] == "e1" for r in receiver.requests)
        attempts = await stores.outbox.attempts(TENANT, message.id)
        assert [(a.number, a.status) for a in attempts] == [(1, 500), (2, 500), (3, 500)]
        assert attempts[0].error == "HTTP 500: database is down"
        dead, total = await stores.outbox.dead_letters(TENANT, limit=10)
        assert total == 1 and [m.id for m in dead] == [message.id]
        assert dead[0].last_status == 500 and dead[0].attempts == 3
        assert await stores.outbox.counts(TENANT) == {
            "held": 0,
            "pending": 0,
            "delivered": 0,
            "dead": 1,
        }

        receiver.default = Reply(204)  # the other system is back
        replayed = await stores.outbox.replay(TENANT, message.id, datetime.now(UTC))
        assert replayed is not None and (replayed.state, replayed.attempts) == ("pending", 0)
        worker.wake()
        await eventually(lambda: _is(stores, message.id, "delivered"))
        assert len(receiver.requests) == 4
        attempts = await stores.outbox.attempts(TENANT, message.id)
        assert [(a.number, a.status) for a in attempts][-1] == (1, 204)
        assert (await stores.outbox.dead_letters(TENANT, limit=10))[1] == 0


async def test_an_address_the_policy_refuses_is_a_dead_letter_at_once(
    stores: Stores,
) -> None:
    production = OutboundPolicy(allow_loopback=False)
    with recording_http_server() as receiver:
        await stores.destinations.save(
            destination("internal", url=receiver.url("/hook"), max_attempts=5)
        )
        async with outbound_client(production, timeout_s=5) as guarded:
            worker = DeliveryWorker(
                stores.outbox,
                stores.destinations,
                guarded,
                poll_interval_s=0.05,
                backoff_base_s=0.01,
                backoff_max_s=0.04,
                concurrency=4,
            )
            await worker.start()
            try:
                dispatcher = DestinationDispatcher(stores.destinations, ttl_s=60)
                [message] = await plan_and_keep(
                    dispatcher, stores, [event("e1", "signup")], wake=worker.wake
                )
                await eventually(lambda: _is(stores, message.id, "dead"))
            finally:
                await worker.stop()
        assert receiver.requests == []
    [attempt] = await stores.outbox.attempts(TENANT, message.id)
    assert attempt.status is None and attempt.error is not None
    assert "refused by the outbound policy" in attempt.error
    assert "127.0.0.1 is a loopback address" in attempt.error


async def test_no_answer_is_an_attempt_too_and_the_worker_goes_on(
    stores: Stores, make_worker: MakeWorker
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/nobody-listens"
    with recording_http_server(Reply(200, delay_s=1.0)) as receiver:
        await stores.destinations.save(destination("refused", url=closed, max_attempts=2))
        await stores.destinations.save(
            destination("slow", url=receiver.url("/slow"), max_attempts=1, timeout_s=0.2)
        )
        await stores.destinations.save(destination("gone", url=receiver.url("/gone")))
        worker = make_worker()
        dispatcher = DestinationDispatcher(stores.destinations, ttl_s=60)
        messages = await dispatcher.plan(
            TENANT,
            events=[event("e1", "x")],
            profile=None,
            session=None,
            profile_changed=False,
            request="r-1",
        )
        by_destination = {m.destination_id: m for m in messages}
        await stores.destinations.delete(TENANT, "gone")  # deleted after the message was planned
        await stores.outbox.add(messages)
        await worker.start()

        async def all_dead() -> bool:
            return all([await _is(stores, m.id, "dead") for m in messages])

        await eventually(all_dead)
        refused = await stores.outbox.attempts(TENANT, by_destination["refused"].id)
        assert [a.status for a in refused] == [None, None]
        assert all(a.error and "Connect" in a.error for a in refused)
        [slow] = await stores.outbox.attempts(TENANT, by_destination["slow"].id)
        assert slow.status is None and slow.error is not None
        [gone] = await stores.outbox.attempts(TENANT, by_destination["gone"].id)
        assert gone.error == "the destination was deleted; not sent"
        assert [r.path for r in receiver.requests] == ["/slow"]  # nothing sent for "gone"
        assert worker.running


async def test_stop_is_graceful_and_start_again_resumes(
    stores: Stores, make_worker: MakeWorker
) -> None:
    with recording_http_server() as receiver:
        await stores.destinations.save(destination("d", url=receiver.url("/d")))
        worker = make_worker()
        dispatcher = DestinationDispatcher(stores.destinations, ttl_s=60)
        await worker.start()
        await worker.stop()
        assert not worker.running
        [message] = await plan_and_keep(dispatcher, stores, [event("e1", "x")])
        await asyncio.sleep(0.2)
        assert receiver.requests == []  # stopped: nothing claimed
        assert await message_state(stores, message.id) == "pending"
        await worker.start()
        await eventually(lambda: _is(stores, message.id, "delivered"))
        assert len(receiver.requests) == 1


async def test_the_runtime_runs_the_worker_between_start_and_stop(tmp_path: Path) -> None:
    runtime = build_runtime(load_settings(TESSERA_DATA_DIR=str(tmp_path / "data")))
    await runtime.start()
    try:
        assert runtime.delivery.running
        assert runtime.held_work.wake_delivery == runtime.delivery.wake
    finally:
        await runtime.stop()
    # Read through a new name: mypy would keep `runtime.delivery.running` narrowed to True.
    stopped = runtime.delivery
    assert not stopped.running
    assert runtime.http.is_closed
