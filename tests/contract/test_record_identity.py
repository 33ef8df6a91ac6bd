"""Contract of the identity side of the record ports: identity links, retired profiles,
unmerge, erasure, and searching by condition.

Runs once per record backend (see conftest.py), like test_record_stores.py: everything is
written through the writer and read back through the stores.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tessera.errors import InvalidPayload
from tessera.query import parse
from tessera.storage.ports import ChangeSet, Erasure, IdentityLink, RetiredProfile
from tessera.storage.search import Cursor, SearchRequest, parse_sort
from tests.contract.conftest import RecordBackend
from tests.contract.test_record_stores import (
    OTHER_TENANT,
    T0,
    TENANT,
    commit,
    make_event,
    make_profile,
    make_session,
)


async def test_identity_links_point_to_their_profile(record_backend: RecordBackend) -> None:
    await commit(
        record_backend,
        ChangeSet(
            identities=[
                IdentityLink(TENANT, "d-email", "p-1"),
                IdentityLink(TENANT, "d-phone", "p-1"),
                IdentityLink(TENANT, "d-other", "p-2"),
                IdentityLink(OTHER_TENANT, "d-email", "p-9"),
            ]
        ),
    )

    owners = await record_backend.profiles.owners(
        TENANT, ["d-email", "d-phone", "d-other", "d-unknown", "d-email"]
    )

    assert owners == {"d-email": "p-1", "d-phone": "p-1", "d-other": "p-2"}
    assert await record_backend.profiles.owners(OTHER_TENANT, ["d-email"]) == {"d-email": "p-9"}
    assert await record_backend.profiles.owners(TENANT, []) == {}
    assert await record_backend.profiles.owners("nobody", ["d-email"]) == {}


async def test_identity_links_move_and_are_released(record_backend: RecordBackend) -> None:
    await commit(record_backend, ChangeSet(identities=[IdentityLink(TENANT, "d-1", "p-1")]))
    # A merge hands the value to the survivor; releasing in the same change set runs first.
    await commit(
        record_backend,
        ChangeSet(
            released_identities=[(TENANT, "d-1"), (TENANT, "d-never-stored")],
            identities=[IdentityLink(TENANT, "d-1", "p-2"), IdentityLink(TENANT, "d-2", "p-2")],
        ),
    )
    assert await record_backend.profiles.owners(TENANT, ["d-1", "d-2"]) == {
        "d-1": "p-2",
        "d-2": "p-2",
    }

    await commit(record_backend, ChangeSet(released_identities=[(TENANT, "d-1")]))

    assert await record_backend.profiles.owners(TENANT, ["d-1", "d-2"]) == {"d-2": "p-2"}


async def test_merge_retires_a_profile_and_unmerge_restores_it(
    record_backend: RecordBackend,
) -> None:
    survivor = make_profile("p-a", traits={"who": "a"})
    former = make_profile("p-b", traits={"who": "b"}, update=T0 + timedelta(minutes=1))
    await commit(record_backend, ChangeSet(profiles=[survivor, former]))

    merged = make_profile("p-a", ids=["p-a", "p-b"], traits={"who": "a+b"})
    await commit(
        record_backend,
        ChangeSet(profiles=[merged], retired=[RetiredProfile(profile=former, survivor_id="p-a")]),
    )

    retired = await record_backend.profiles.retired(TENANT, "p-b")
    assert retired == RetiredProfile(profile=former, survivor_id="p-a")
    assert await record_backend.profiles.retired(TENANT, "p-a") is None
    assert await record_backend.profiles.retired(OTHER_TENANT, "p-b") is None
    # The former id now resolves to the survivor; the former profile is out of the way.
    assert await record_backend.profiles.get(TENANT, "p-b") == merged
    everyone = await record_backend.profiles.search(TENANT, SearchRequest(None, limit=10))
    assert [profile.id for profile in everyone.items] == ["p-a"]

    split = make_profile("p-a", ids=["p-a"], traits={"who": "a"})
    back = make_profile("p-b", traits={"who": "b"}, update=T0 + timedelta(hours=1))
    await commit(record_backend, ChangeSet(profiles=[split, back], restored=[(TENANT, "p-b")]))

    assert await record_backend.profiles.retired(TENANT, "p-b") is None
    assert await record_backend.profiles.get(TENANT, "p-b") == back
    assert await record_backend.profiles.get(TENANT, "p-a") == split
    everyone = await record_backend.profiles.search(TENANT, SearchRequest(None, limit=10))
    assert [profile.id for profile in everyone.items] == ["p-b", "p-a"]


async def test_retire_then_bring_back_in_one_change_set(record_backend: RecordBackend) -> None:
    # Retiring runs before the upserts of the same change set: the profile ends up stored.
    profile = make_profile("p-x", traits={"v": 1})
    await commit(record_backend, ChangeSet(profiles=[profile]))
    again = make_profile("p-x", traits={"v": 2})

    await commit(
        record_backend,
        ChangeSet(profiles=[again], retired=[RetiredProfile(profile=profile, survivor_id="p-y")]),
    )

    assert await record_backend.profiles.get(TENANT, "p-x") == again
    assert await record_backend.profiles.retired(TENANT, "p-x") is not None


def _person() -> ChangeSet:
    return ChangeSet(
        events=[
            make_event("e-own", profile="p-main"),
            make_event("e-merged", profile="p-old", time=T0 + timedelta(minutes=1)),
            make_event("e-stranger", profile="p-other"),
        ],
        sessions=[
            make_session("s-own", profile="p-main"),
            make_session("s-merged", profile="p-old"),
            make_session("s-stranger", profile="p-other"),
        ],
        profiles=[
            make_profile("p-main", ids=["p-main", "p-old"], traits={"email": "ann@example.com"}),
            make_profile("p-other"),
        ],
        identities=[
            IdentityLink(TENANT, "d-ann", "p-main"),
            IdentityLink(TENANT, "d-other", "p-other"),
        ],
        retired=[RetiredProfile(profile=make_profile("p-old"), survivor_id="p-main")],
    )


async def test_erasure_removes_everything_about_the_person(
    record_backend: RecordBackend,
) -> None:
    await commit(record_backend, _person())

    await commit(record_backend, ChangeSet(erasures=[Erasure(TENANT, ("p-main", "p-old"))]))

    for profile_id in ("p-main", "p-old"):
        assert await record_backend.profiles.get(TENANT, profile_id) is None
    assert await record_backend.profiles.retired(TENANT, "p-old") is None
    assert await record_backend.profiles.owners(TENANT, ["d-ann", "d-other"]) == {
        "d-other": "p-other"
    }
    assert await record_backend.events.existing_ids(
        TENANT, ["e-own", "e-merged", "e-stranger"]
    ) == {"e-stranger"}
    assert (await record_backend.events.for_profiles(TENANT, ["p-main", "p-old"])).total == 0
    assert await record_backend.sessions.get(TENANT, "s-own") is None
    assert await record_backend.sessions.get(TENANT, "s-merged") is None
    # Nobody else was touched.
    assert await record_backend.sessions.get(TENANT, "s-stranger") is not None
    assert await record_backend.profiles.get(TENANT, "p-other") is not None


async def test_erasure_keeping_records_removes_only_the_profile(
    record_backend: RecordBackend,
) -> None:
    await commit(record_backend, _person())

    await commit(
        record_backend,
        ChangeSet(erasures=[Erasure(TENANT, ("p-main", "p-old"), keep_records=True)]),
    )

    assert await record_backend.profiles.get(TENANT, "p-main") is None
    assert await record_backend.profiles.get(TENANT, "p-old") is None
    assert await record_backend.profiles.retired(TENANT, "p-old") is None
    assert await record_backend.profiles.owners(TENANT, ["d-ann"]) == {}
    assert await record_backend.events.existing_ids(TENANT, ["e-own", "e-merged"]) == {
        "e-own",
        "e-merged",
    }
    sessions = await record_backend.sessions.for_profiles(TENANT, ["p-main", "p-old"])
    assert sessions.total == 2


async def test_erasure_after_writes_of_the_same_batch(record_backend: RecordBackend) -> None:
    # Erasures run after every other write of their change set (and batch).
    await commit(
        record_backend,
        ChangeSet(
            events=[make_event("e-new", profile="p-gone")],
            profiles=[make_profile("p-gone")],
            erasures=[Erasure(TENANT, ("p-gone",))],
        ),
    )

    assert await record_backend.profiles.get(TENANT, "p-gone") is None
    assert await record_backend.events.existing_ids(TENANT, ["e-new"]) == set()


async def test_sessions_for_profiles_newest_activity_first(record_backend: RecordBackend) -> None:
    await commit(
        record_backend,
        ChangeSet(
            sessions=[
                make_session("s-old", profile="p-a", update=T0),
                make_session("s-new", profile="p-b", update=T0 + timedelta(hours=2)),
                make_session("s-mid", profile="p-a", update=T0 + timedelta(hours=1)),
                make_session("s-else", profile="p-c", update=T0 + timedelta(hours=3)),
            ]
        ),
    )

    page = await record_backend.sessions.for_profiles(TENANT, ["p-a", "p-b"])
    second = await record_backend.sessions.for_profiles(TENANT, ["p-a", "p-b"], limit=1, offset=1)

    assert page.total == 3
    assert [session.id for session in page.items] == ["s-new", "s-mid", "s-old"]
    assert (second.total, [session.id for session in second.items]) == (3, ["s-mid"])
    assert (await record_backend.sessions.for_profiles(TENANT, [])).total == 0


# --- Search ------------------------------------------------------------------------------------


async def _people(backend: RecordBackend) -> None:
    profiles = [
        make_profile(
            f"p-{rank}",
            traits={"rank": rank, "plan": "pro" if rank % 2 else "free"},
            update=T0 + timedelta(minutes=rank),
        )
        for rank in range(6)
    ]
    await commit(backend, ChangeSet(profiles=profiles))


async def test_search_profiles_by_condition(record_backend: RecordBackend) -> None:
    await _people(record_backend)

    condition = parse("profile@traits.plan == 'pro' AND profile@traits.rank > 1")
    found = await record_backend.profiles.search(TENANT, SearchRequest(condition, limit=10))

    assert found.total == 2
    # Default order: most recently updated first.
    assert [profile.id for profile in found.items] == ["p-5", "p-3"]
    nothing = await record_backend.profiles.search(OTHER_TENANT, SearchRequest(condition, limit=10))
    assert (nothing.total, nothing.items) == (0, [])


async def test_search_profiles_sorted_and_paged(record_backend: RecordBackend) -> None:
    await _people(record_backend)
    sort = parse_sort("profile", "profile@traits.rank", "asc")

    page = await record_backend.profiles.search(
        TENANT, SearchRequest(parse("profile@traits.rank >= 1"), limit=2, offset=1, sort=sort)
    )

    assert page.total == 5
    assert [profile.traits["rank"] for profile in page.items] == [2, 3]


async def test_search_cursor_walks_every_profile_once(record_backend: RecordBackend) -> None:
    await _people(record_backend)
    seen: list[str] = []
    cursor: Cursor | None = None
    for _ in range(10):
        page = await record_backend.profiles.search(
            TENANT, SearchRequest(None, limit=4, cursor=cursor)
        )
        assert page.total == 6 or cursor is not None
        seen += [profile.id for profile in page.items]
        if page.next_cursor is None:
            break
        cursor = Cursor.decode(page.next_cursor)

    assert seen == [f"p-{rank}" for rank in range(5, -1, -1)]


async def test_search_events_by_condition(record_backend: RecordBackend) -> None:
    await commit(
        record_backend,
        ChangeSet(
            events=[
                make_event("buy-1", event_type="purchase", properties={"total": 10}),
                make_event(
                    "buy-2",
                    event_type="purchase",
                    properties={"total": 99.5},
                    time=T0 + timedelta(minutes=1),
                ),
                make_event("view-1", properties={"total": "100"}),
            ]
        ),
    )

    found = await record_backend.events.search(
        TENANT, SearchRequest(parse("event@properties.total > 20"), limit=10)
    )
    typed = await record_backend.events.search(
        TENANT, SearchRequest(parse("event@type == 'purchase'"), limit=10)
    )

    # "100" is a string: it never compares with a number.
    assert (found.total, [event.id for event in found.items]) == (1, ["buy-2"])
    assert (typed.total, [event.id for event in typed.items]) == (2, ["buy-2", "buy-1"])


async def test_search_refuses_a_field_of_another_entity(record_backend: RecordBackend) -> None:
    with pytest.raises(InvalidPayload):
        await record_backend.profiles.search(
            TENANT, SearchRequest(parse("event@type == 'x'"), limit=10)
        )
