"""Contract of the hot-record ports: RecordWriter, EventStore, SessionStore, ProfileStore.

Every test runs once per record backend (see conftest.py). Writes go through the writer only;
everything a test asserts is read back through the stores.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tessera.errors import RecordRejected, StorageUnavailable
from tessera.model.common import Ref
from tessera.model.event import Event, EventMetadata
from tessera.model.profile import Profile, ProfileMetadata, ProfileTime, new_stats
from tessera.model.session import Session, SessionMetadata, SessionTime
from tessera.storage.ports import ChangeSet
from tests.contract.conftest import RecordBackend, RecordOpener

TENANT = "acme"
OTHER_TENANT = "globex"
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))
MINUS_FIVE_THIRTY = timezone(-timedelta(hours=5, minutes=30))
# How long a test waits for a commit before calling it hung.
COMMIT_TIMEOUT_S = 10


def make_event(
    event_id: str,
    *,
    tenant: str = TENANT,
    profile: str | None = "p-1",
    session: str | None = "s-1",
    event_type: str = "page-view",
    time: datetime = T0,
    properties: dict[str, Any] | None = None,
) -> Event:
    return Event(
        id=event_id,
        tenant=tenant,
        type=event_type,
        time=time,
        metadata=EventMetadata(insert=T0 + timedelta(seconds=1)),
        source=Ref("web"),
        session=Ref(session) if session is not None else None,
        profile=Ref(profile) if profile is not None else None,
        properties=properties if properties is not None else {},
    )


def make_session(
    session_id: str,
    *,
    tenant: str = TENANT,
    profile: str | None = "p-1",
    events: int = 1,
    update: datetime = T0,
) -> Session:
    return Session(
        id=session_id,
        tenant=tenant,
        profile=Ref(profile) if profile is not None else None,
        metadata=SessionMetadata(time=SessionTime(insert=T0, update=update), channel="web"),
        source=Ref("web"),
        events=events,
    )


def make_profile(
    profile_id: str,
    *,
    tenant: str = TENANT,
    ids: list[str] | None = None,
    traits: dict[str, Any] | None = None,
    update: datetime = T0,
) -> Profile:
    return Profile(
        id=profile_id,
        tenant=tenant,
        metadata=ProfileMetadata(time=ProfileTime(insert=T0, update=update)),
        ids=ids if ids is not None else [profile_id],
        traits=traits if traits is not None else {},
    )


async def commit(
    backend: RecordBackend, changes: ChangeSet, *, timeout_s: float = COMMIT_TIMEOUT_S
) -> None:
    async with asyncio.timeout(timeout_s):
        await backend.writer.commit(changes)


async def event_ids(backend: RecordBackend, profile_ids: list[str], **query: Any) -> list[str]:
    page = await backend.events.for_profiles(TENANT, profile_ids, **query)
    return [event.id for event in page.items]


# --- Events: round trip ------------------------------------------------------------------------


async def test_event_round_trips_every_field(record_backend: RecordBackend) -> None:
    event = Event(
        id="evt-🦄-ž",
        tenant=TENANT,
        type="purchase-completed",
        time=datetime(2024, 5, 1, 14, 30, 15, 654321, tzinfo=PLUS_TWO),
        metadata=EventMetadata(
            insert=datetime(2024, 5, 1, 7, 0, 16, 1, tzinfo=MINUS_FIVE_THIRTY),
            status="processed",
            valid=False,
            ip="2001:db8::1",
            profile_less=False,
            errors=["first", "drugi błąd"],
        ),
        source=Ref("web-shop"),
        session=Ref("s-42"),
        profile=Ref("p-42"),
        properties={
            "text": "Zażółć gęślą jaźń — 日本語 — مرحبا — 🎉",
            "empty": "",
            "quote": 'a "quoted" \\ back\nslash\ttab',
            "int": 42,
            "big": 12345678901234567890123,
            "negative": -7,
            "float": 1.5,
            "flag": True,
            "off": False,
            "nothing": None,
            "list": [1, "two", 3.0, None, [True, {"deep": "ü"}]],
            "nested": {"a": {"b": {"c": {"d": ["e", {"f": 0}]}}}, "empty": {}, "none": []},
        },
        context={"page": {"url": "https://example.com/ä?q=1&r=ß", "title": "Å"}},
        options={"saveEvent": True},
        tags=["checkout", "ünïcode"],
        request={"headers": {"user-agent": "Mozilla/5.0"}, "ip": "203.0.113.9"},
    )
    await commit(record_backend, ChangeSet(events=[event]))

    got = await record_backend.events.get(TENANT, event.id)

    assert got is not None
    assert got == event
    # Equality alone would let some conversions through: check them one by one.
    assert got.time == datetime(2024, 5, 1, 12, 30, 15, 654321, tzinfo=UTC)
    assert got.time.utcoffset() is not None
    assert got.metadata.insert == datetime(2024, 5, 1, 12, 30, 16, 1, tzinfo=UTC)
    assert got.metadata.insert.utcoffset() is not None
    assert got.properties["flag"] is True
    assert got.properties["off"] is False
    assert type(got.properties["int"]) is int
    assert type(got.properties["float"]) is float
    assert got.properties["big"] == 12345678901234567890123
    assert got.properties["nothing"] is None
    assert got.properties["text"] == "Zażółć gęślą jaźń — 日本語 — مرحبا — 🎉"
    assert got.properties["nested"]["a"]["b"]["c"]["d"] == ["e", {"f": 0}]
    assert got.properties["list"][4][1] == {"deep": "ü"}
    assert got.metadata.errors == ["first", "drugi błąd"]
    assert got.metadata.valid is False


async def test_event_without_profile_or_session_round_trips(
    record_backend: RecordBackend,
) -> None:
    event = make_event("evt-bare", profile=None, session=None)
    await commit(record_backend, ChangeSet(events=[event]))

    got = await record_backend.events.get(TENANT, "evt-bare")

    assert got == event
    assert got is not None
    assert got.profile is None
    assert got.session is None
    assert got.properties == {}


async def test_unknown_records_are_none(record_backend: RecordBackend) -> None:
    await commit(
        record_backend,
        ChangeSet(events=[make_event("e-1")], sessions=[make_session("s-1")]),
    )

    assert await record_backend.events.get(TENANT, "nope") is None
    assert await record_backend.sessions.get(TENANT, "nope") is None
    assert await record_backend.profiles.get(TENANT, "nope") is None


async def test_one_change_set_stores_all_its_records(record_backend: RecordBackend) -> None:
    changes = ChangeSet(
        events=[make_event("e-1"), make_event("e-2")],
        sessions=[make_session("s-1")],
        profiles=[make_profile("p-1")],
    )
    assert len(changes) == 4
    await commit(record_backend, changes)

    assert await record_backend.events.existing_ids(TENANT, ["e-1", "e-2"]) == {"e-1", "e-2"}
    # The records as committed (a store cut in partitions notes the record's home in them).
    assert await record_backend.sessions.get(TENANT, "s-1") == changes.sessions[0]
    assert await record_backend.profiles.get(TENANT, "p-1") == changes.profiles[0]
    session, profile = make_session("s-1"), make_profile("p-1")
    session.metadata.partition = changes.sessions[0].metadata.partition
    profile.metadata.partition = changes.profiles[0].metadata.partition
    assert (changes.sessions[0], changes.profiles[0]) == (session, profile)


async def test_empty_change_set_commits(record_backend: RecordBackend) -> None:
    await commit(record_backend, ChangeSet())
    await commit(record_backend, ChangeSet(events=[make_event("after-empty")]))

    got = await record_backend.events.get(TENANT, "after-empty")
    assert got is not None
    assert got.id == "after-empty"


# --- Events are never overwritten --------------------------------------------------------------


async def test_repeated_event_id_keeps_the_first(record_backend: RecordBackend) -> None:
    first = make_event("e-dup", properties={"version": 1, "text": "first"})
    second = make_event("e-dup", event_type="other", properties={"version": 2})
    await commit(record_backend, ChangeSet(events=[first]))
    await commit(record_backend, ChangeSet(events=[second]))

    got = await record_backend.events.get(TENANT, "e-dup")
    assert got == first
    assert got is not None
    assert got.properties == {"version": 1, "text": "first"}
    assert got.type == "page-view"
    page = await record_backend.events.for_profiles(TENANT, ["p-1"])
    assert page.total == 1
    assert [event.id for event in page.items] == ["e-dup"]
    other = await record_backend.events.for_profiles(TENANT, ["p-1"], event_type="other")
    assert other.total == 0
    assert other.items == []


async def test_repeated_event_id_in_one_change_set_keeps_the_first(
    record_backend: RecordBackend,
) -> None:
    first = make_event("e-twice", properties={"version": 1})
    second = make_event("e-twice", properties={"version": 2})
    await commit(record_backend, ChangeSet(events=[first, second]))

    got = await record_backend.events.get(TENANT, "e-twice")
    assert got is not None
    assert got.properties == {"version": 1}
    page = await record_backend.events.for_profiles(TENANT, ["p-1"])
    assert page.total == 1


# --- existing_ids ------------------------------------------------------------------------------


async def test_existing_ids_with_duplicates_and_unknown_ids(
    record_backend: RecordBackend,
) -> None:
    await commit(record_backend, ChangeSet(events=[make_event(f"e-{i}") for i in range(5)]))

    found = await record_backend.events.existing_ids(
        TENANT, ["e-0", "e-0", "unknown", "e-3", "e-3", "e-4", "also-unknown", "e-0"]
    )

    assert found == {"e-0", "e-3", "e-4"}
    assert await record_backend.events.existing_ids(TENANT, ["x", "y"]) == set()
    assert await record_backend.events.existing_ids(TENANT, []) == set()


async def test_existing_ids_beyond_one_query_chunk(record_backend: RecordBackend) -> None:
    stored = [f"bulk-{i:04d}" for i in range(1200)]
    for start in range(0, len(stored), 300):
        chunk = stored[start : start + 300]
        await commit(record_backend, ChangeSet(events=[make_event(i) for i in chunk]))

    unknown = [f"missing-{i:04d}" for i in range(150)]
    # Unknown ids first, stored ones repeated: every chunk boundary lands somewhere different.
    asked = unknown + stored + stored[::7]
    found = await record_backend.events.existing_ids(TENANT, asked)

    assert len(asked) > 1500
    assert found == set(stored)
    # A stored id beyond the 500th of the question is found, and only stored ids are.
    assert await record_backend.events.existing_ids(TENANT, [*unknown * 4, "bulk-1199"]) == {
        "bulk-1199"
    }


# --- for_profiles ------------------------------------------------------------------------------


async def test_for_profiles_is_newest_first_by_event_time(record_backend: RecordBackend) -> None:
    # Committed in an order unrelated to their time; one time has a +02:00 offset, so an order
    # by local clock reading instead of by instant would put it in the wrong place.
    events = [
        make_event("at-10", time=T0.replace(hour=10)),
        make_event("at-13", time=T0.replace(hour=13)),
        make_event("at-11:30z", time=datetime(2024, 5, 1, 13, 30, tzinfo=PLUS_TWO)),
        make_event("at-09", time=T0.replace(hour=9)),
        make_event("next-day", time=T0 + timedelta(days=1)),
        make_event("year-before", time=T0 - timedelta(days=366)),
    ]
    await commit(record_backend, ChangeSet(events=events[:3]))
    await commit(record_backend, ChangeSet(events=events[3:]))

    page = await record_backend.events.for_profiles(TENANT, ["p-1"])

    assert page.total == 6
    assert [event.id for event in page.items] == [
        "next-day",
        "at-13",
        "at-11:30z",
        "at-10",
        "at-09",
        "year-before",
    ]
    assert page.items[2] == events[2]


async def test_for_profiles_filters_by_event_type(record_backend: RecordBackend) -> None:
    events = [
        make_event("view-1", event_type="page-view", time=T0),
        make_event("buy-1", event_type="purchase", time=T0 + timedelta(minutes=1)),
        make_event("view-2", event_type="page-view", time=T0 + timedelta(minutes=2)),
        make_event("buy-2", event_type="purchase", time=T0 + timedelta(minutes=3)),
        make_event("view-3", event_type="page-view", time=T0 + timedelta(minutes=4)),
    ]
    await commit(record_backend, ChangeSet(events=events))

    purchases = await record_backend.events.for_profiles(TENANT, ["p-1"], event_type="purchase")
    views = await record_backend.events.for_profiles(
        TENANT, ["p-1"], event_type="page-view", limit=2, offset=1
    )
    none = await record_backend.events.for_profiles(TENANT, ["p-1"], event_type="signup")

    assert purchases.total == 2
    assert [event.id for event in purchases.items] == ["buy-2", "buy-1"]
    assert all(event.type == "purchase" for event in purchases.items)
    assert views.total == 3
    assert [event.id for event in views.items] == ["view-2", "view-1"]
    assert none.total == 0
    assert none.items == []


async def test_for_profiles_pages_and_counts_before_paging(record_backend: RecordBackend) -> None:
    events = [make_event(f"e-{i}", time=T0 + timedelta(minutes=i)) for i in range(7)]
    await commit(record_backend, ChangeSet(events=events))

    pages = [
        await record_backend.events.for_profiles(TENANT, ["p-1"], limit=3, offset=offset)
        for offset in (0, 3, 6, 9)
    ]

    assert [page.total for page in pages] == [7, 7, 7, 7]
    assert [[event.id for event in page.items] for page in pages] == [
        ["e-6", "e-5", "e-4"],
        ["e-3", "e-2", "e-1"],
        ["e-0"],
        [],
    ]
    default = await record_backend.events.for_profiles(TENANT, ["p-1"])
    assert default.total == 7
    assert len(default.items) == 7
    one = await record_backend.events.for_profiles(TENANT, ["p-1"], limit=1)
    assert [event.id for event in one.items] == ["e-6"]
    assert one.total == 7


async def test_for_profiles_default_limit_is_twenty(record_backend: RecordBackend) -> None:
    events = [make_event(f"e-{i:02d}", time=T0 + timedelta(seconds=i)) for i in range(25)]
    await commit(record_backend, ChangeSet(events=events))

    page = await record_backend.events.for_profiles(TENANT, ["p-1"])

    assert page.total == 25
    assert [event.id for event in page.items] == [f"e-{i:02d}" for i in range(24, 4, -1)]


async def test_for_profiles_spans_several_profile_ids(record_backend: RecordBackend) -> None:
    events = [
        make_event("a-1", profile="p-a", time=T0),
        make_event("b-1", profile="p-b", time=T0 + timedelta(minutes=1)),
        make_event("c-1", profile="p-c", time=T0 + timedelta(minutes=2)),
        make_event("a-2", profile="p-a", time=T0 + timedelta(minutes=3)),
        make_event("b-2", profile="p-b", time=T0 + timedelta(minutes=4)),
        make_event("nobody", profile=None, time=T0 + timedelta(minutes=5)),
    ]
    await commit(record_backend, ChangeSet(events=events))

    both = await record_backend.events.for_profiles(TENANT, ["p-a", "p-b"])
    repeated = await record_backend.events.for_profiles(TENANT, ["p-b", "p-a", "p-b", "p-a"])
    with_unknown = await record_backend.events.for_profiles(TENANT, ["p-c", "p-unknown"])

    assert both.total == 4
    assert [event.id for event in both.items] == ["b-2", "a-2", "b-1", "a-1"]
    assert repeated.total == 4
    assert [event.id for event in repeated.items] == ["b-2", "a-2", "b-1", "a-1"]
    assert with_unknown.total == 1
    assert [event.id for event in with_unknown.items] == ["c-1"]
    empty = await record_backend.events.for_profiles(TENANT, [])
    assert empty.total == 0
    assert empty.items == []


async def test_for_profiles_with_more_than_500_profile_ids(record_backend: RecordBackend) -> None:
    await commit(
        record_backend,
        ChangeSet(
            events=[
                make_event("first", profile="p-0000", time=T0),
                make_event("last", profile="p-0599", time=T0 + timedelta(minutes=1)),
            ]
        ),
    )

    page = await record_backend.events.for_profiles(TENANT, [f"p-{i:04d}" for i in range(600)])

    assert page.total == 2
    assert [event.id for event in page.items] == ["last", "first"]


# --- Sessions and profiles: upsert and aliases -------------------------------------------------


async def test_session_round_trip_and_upsert(record_backend: RecordBackend) -> None:
    session = Session(
        id="s-1",
        tenant=TENANT,
        profile=Ref("p-1"),
        metadata=SessionMetadata(
            time=SessionTime(insert=T0, update=datetime(2024, 5, 1, 16, 0, tzinfo=PLUS_TWO)),
            channel="mobile",
        ),
        source=Ref("app"),
        events=3,
        context={"device": {"os": "Android", "名前": "テスト"}},
        properties={"utm": {"campaign": "spring"}},
    )
    await commit(record_backend, ChangeSet(sessions=[session]))
    assert await record_backend.sessions.get(TENANT, "s-1") == session

    updated = make_session("s-1", profile="p-2", events=9, update=T0 + timedelta(hours=1))
    await commit(record_backend, ChangeSet(sessions=[updated]))

    got = await record_backend.sessions.get(TENANT, "s-1")
    assert got == updated
    assert got is not None
    assert got.events == 9
    assert got.profile == Ref("p-2")
    assert got.context == {}
    assert got.metadata.channel == "web"


async def test_session_without_profile_round_trips(record_backend: RecordBackend) -> None:
    session = make_session("s-anon", profile=None)
    await commit(record_backend, ChangeSet(sessions=[session]))

    got = await record_backend.sessions.get(TENANT, "s-anon")
    assert got == session
    assert got is not None
    assert got.profile is None


async def test_profile_round_trip_and_upsert(record_backend: RecordBackend) -> None:
    profile = Profile(
        id="p-1",
        tenant=TENANT,
        metadata=ProfileMetadata(
            time=ProfileTime(
                insert=T0,
                update=T0 + timedelta(minutes=5),
                last_visit=datetime(2024, 5, 1, 8, 0, tzinfo=MINUS_FIVE_THIRTY),
            )
        ),
        ids=["p-1"],
        stats={"visits": 2, "events": 17, "ltv": 12.5},
        traits={"name": "Zoë Ångström", "address": {"city": "Kraków", "zip": "30-001"}},
        data={"contact": {"email": "zoe@example.com"}},
        segments=["vip", "newsletter"],
        interests={"sport": 0.75, "music": 2.0},
        consents={"marketing": {"granted": True}},
        active=True,
    )
    await commit(record_backend, ChangeSet(profiles=[profile]))
    assert await record_backend.profiles.get(TENANT, "p-1") == profile

    replacement = make_profile("p-1", traits={"name": "Zoe"}, update=T0 + timedelta(days=1))
    await commit(record_backend, ChangeSet(profiles=[replacement]))

    got = await record_backend.profiles.get(TENANT, "p-1")
    assert got == replacement
    assert got is not None
    assert got.traits == {"name": "Zoe"}
    assert got.segments == []
    assert got.stats == new_stats()
    assert got.metadata.time.last_visit is None


async def test_profile_is_found_by_any_of_its_ids(record_backend: RecordBackend) -> None:
    merged = make_profile("p-main", ids=["p-main", "p-old-1", "p-old-2"], traits={"n": 1})
    await commit(record_backend, ChangeSet(profiles=[merged]))

    for profile_id in ("p-main", "p-old-1", "p-old-2"):
        got = await record_backend.profiles.get(TENANT, profile_id)
        assert got == merged, profile_id
    assert await record_backend.profiles.get(TENANT, "p-old-3") is None


async def test_alias_resolves_to_the_profiles_latest_version(
    record_backend: RecordBackend,
) -> None:
    await commit(record_backend, ChangeSet(profiles=[make_profile("p-main")]))
    assert await record_backend.profiles.get(TENANT, "p-merged") is None

    merged = make_profile("p-main", ids=["p-main", "p-merged"], traits={"merged": True})
    await commit(record_backend, ChangeSet(profiles=[merged]))
    later = make_profile("p-main", ids=["p-main", "p-merged"], traits={"merged": "later"})
    await commit(record_backend, ChangeSet(profiles=[later]))

    got = await record_backend.profiles.get(TENANT, "p-merged")
    assert got == later
    assert got is not None
    assert got.id == "p-main"
    assert got.traits == {"merged": "later"}


async def test_an_id_another_profile_lists_leads_to_that_profile(
    record_backend: RecordBackend,
) -> None:
    # A profile listing another's id took it over in a merge; while the merged-away one is
    # still stored (a merge whose commit was cut short before it left: writer phase 3), the id
    # leads to the survivor, so that no request changes the profile about to be retired.
    kept = make_profile("p-b", traits={"who": "b"})
    lister = make_profile("p-a", ids=["p-a", "p-b"], traits={"who": "a"})
    await commit(record_backend, ChangeSet(profiles=[kept, lister]))

    got_b = await record_backend.profiles.get(TENANT, "p-b")
    got_a = await record_backend.profiles.get(TENANT, "p-a")
    assert got_b == lister
    assert got_a == lister


async def test_alias_no_longer_listed_no_longer_resolves(record_backend: RecordBackend) -> None:
    await commit(
        record_backend, ChangeSet(profiles=[make_profile("p-main", ids=["p-main", "p-gone"])])
    )
    assert await record_backend.profiles.get(TENANT, "p-gone") is not None

    await commit(record_backend, ChangeSet(profiles=[make_profile("p-main", ids=["p-main"])]))

    assert await record_backend.profiles.get(TENANT, "p-gone") is None


# --- Tenants -----------------------------------------------------------------------------------


async def test_tenants_do_not_see_each_other(record_backend: RecordBackend) -> None:
    ours = ChangeSet(
        events=[make_event("e-1", properties={"who": "acme"})],
        sessions=[make_session("s-1", events=1)],
        profiles=[make_profile("p-1", ids=["p-1", "p-alias"], traits={"who": "acme"})],
    )
    theirs = ChangeSet(
        events=[
            make_event("e-1", tenant=OTHER_TENANT, properties={"who": "globex"}),
            make_event("e-2", tenant=OTHER_TENANT, time=T0 + timedelta(minutes=1)),
        ],
        sessions=[make_session("s-1", tenant=OTHER_TENANT, events=2)],
        profiles=[make_profile("p-1", tenant=OTHER_TENANT, traits={"who": "globex"})],
    )
    await commit(record_backend, ours)
    await commit(record_backend, theirs)

    # The same event id in another tenant is a different event, not a repeat.
    our_event = await record_backend.events.get(TENANT, "e-1")
    their_event = await record_backend.events.get(OTHER_TENANT, "e-1")
    assert our_event is not None
    assert their_event is not None
    assert our_event.properties == {"who": "acme"}
    assert their_event.properties == {"who": "globex"}
    assert their_event.tenant == OTHER_TENANT

    assert await record_backend.events.existing_ids(TENANT, ["e-1", "e-2"]) == {"e-1"}
    assert await record_backend.events.existing_ids(OTHER_TENANT, ["e-1", "e-2"]) == {
        "e-1",
        "e-2",
    }
    assert await record_backend.events.get(TENANT, "e-2") is None
    assert await record_backend.events.get("nobody", "e-1") is None

    our_page = await record_backend.events.for_profiles(TENANT, ["p-1"])
    their_page = await record_backend.events.for_profiles(OTHER_TENANT, ["p-1"])
    assert (our_page.total, [e.id for e in our_page.items]) == (1, ["e-1"])
    assert (their_page.total, [e.id for e in their_page.items]) == (2, ["e-2", "e-1"])

    our_session = await record_backend.sessions.get(TENANT, "s-1")
    their_session = await record_backend.sessions.get(OTHER_TENANT, "s-1")
    assert our_session is not None
    assert their_session is not None
    assert (our_session.events, their_session.events) == (1, 2)

    our_profile = await record_backend.profiles.get(TENANT, "p-1")
    their_profile = await record_backend.profiles.get(OTHER_TENANT, "p-1")
    assert our_profile is not None
    assert their_profile is not None
    assert our_profile.traits == {"who": "acme"}
    assert their_profile.traits == {"who": "globex"}
    # Aliases belong to their tenant too.
    alias_profile = await record_backend.profiles.get(TENANT, "p-alias")
    assert alias_profile is not None
    assert alias_profile.id == "p-1"
    assert await record_backend.profiles.get(OTHER_TENANT, "p-alias") is None


# --- Group commit, durability, lifecycle -------------------------------------------------------


async def test_concurrent_commits_are_all_durable_and_grouped(
    record_backend: RecordBackend,
) -> None:
    callers = 200
    before = record_backend.commits()

    async with asyncio.timeout(60):
        await asyncio.gather(
            *(
                record_backend.writer.commit(
                    ChangeSet(
                        events=[
                            make_event(
                                f"c-{i:03d}",
                                session=f"cs-{i:03d}",
                                time=T0 + timedelta(seconds=i),
                                properties={"caller": i},
                            )
                        ],
                        sessions=[make_session(f"cs-{i:03d}", events=i)],
                    )
                )
                for i in range(callers)
            )
        )

    commits = record_backend.commits() - before
    ids = [f"c-{i:03d}" for i in range(callers)]
    assert await record_backend.events.existing_ids(TENANT, ids) == set(ids)
    page = await record_backend.events.for_profiles(TENANT, ["p-1"], limit=callers)
    assert page.total == callers
    assert [event.id for event in page.items] == ids[::-1]
    assert [event.properties["caller"] for event in page.items] == list(range(callers))[::-1]
    sessions = await asyncio.gather(
        *(record_backend.sessions.get(TENANT, f"cs-{i:03d}") for i in range(callers))
    )
    assert [session.events if session else None for session in sessions] == list(range(callers))
    # Group commit: many callers share one commit.
    assert 1 <= commits < callers


async def test_data_survives_close_and_reopen(open_records: RecordOpener, tmp_path: Path) -> None:
    place = tmp_path / "durable"
    event = make_event("e-durable", properties={"kept": ["across", "restarts", "✓"]})
    session = make_session("s-durable", events=4)
    profile = make_profile("p-durable", ids=["p-durable", "p-durable-alias"], traits={"a": 1})

    async with open_records(place) as first:
        await commit(first, ChangeSet(events=[event], sessions=[session], profiles=[profile]))

    async with open_records(place) as second:
        assert await second.events.get(TENANT, "e-durable") == event
        assert await second.sessions.get(TENANT, "s-durable") == session
        assert await second.profiles.get(TENANT, "p-durable") == profile
        assert await second.profiles.get(TENANT, "p-durable-alias") == profile
        page = await second.events.for_profiles(TENANT, ["p-1"])
        assert [item.id for item in page.items] == ["e-durable"]
        # Events stay insert-once across restarts as well.
        await commit(second, ChangeSet(events=[make_event("e-durable", properties={})]))
        again = await second.events.get(TENANT, "e-durable")
        assert again is not None
        assert again.properties == {"kept": ["across", "restarts", "✓"]}


async def test_commit_after_close_raises_storage_unavailable(
    open_records: RecordOpener, tmp_path: Path
) -> None:
    place = tmp_path / "closed"
    async with open_records(place) as backend:
        await commit(backend, ChangeSet(events=[make_event("before-close")]))

    with pytest.raises(StorageUnavailable):
        await commit(backend, ChangeSet(events=[make_event("after-close")]))

    async with open_records(place) as reopened:
        assert await reopened.events.existing_ids(TENANT, ["before-close", "after-close"]) == {
            "before-close"
        }


async def test_a_change_set_that_cannot_be_stored_fails_alone(
    record_backend: RecordBackend,
) -> None:
    unstorable = make_event("e-bad", properties={"not-json": object()})

    # Refused for what it is: sending it again cannot help (a worker dead-letters it).
    with pytest.raises(RecordRejected):
        await commit(record_backend, ChangeSet(events=[unstorable]), timeout_s=3)

    await commit(record_backend, ChangeSet(events=[make_event("e-good")]), timeout_s=3)
    assert await record_backend.events.existing_ids(TENANT, ["e-bad", "e-good"]) == {"e-good"}


async def test_schema_is_installed_and_creating_it_again_keeps_data(
    record_backend: RecordBackend,
) -> None:
    version = await record_backend.schema.installed_version()
    assert isinstance(version, int)
    assert version >= 1
    await commit(record_backend, ChangeSet(events=[make_event("e-kept")]))

    await record_backend.schema.create_schema()
    await record_backend.schema.create_schema()

    assert await record_backend.schema.installed_version() == version
    assert await record_backend.events.existing_ids(TENANT, ["e-kept"]) == {"e-kept"}
    await commit(record_backend, ChangeSet(events=[make_event("e-after")]))
    assert await record_backend.events.existing_ids(TENANT, ["e-kept", "e-after"]) == {
        "e-kept",
        "e-after",
    }
