"""Contract of `pages_for_profiles` (EventStore, SessionStore): every record of a person, page
by page to the end, each once, in the stores' order. Export reads through it, so a person with
more records than a page (or than Elasticsearch's 10,000-hit window) is exported whole.

The page size is a parameter of each backend; these tests use 3, so a handful of records
crosses several pages (on Elasticsearch: several search_after steps in one point in time).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tessera.storage.ports import ChangeSet
from tests.contract.conftest import RECORD_BACKENDS, RecordBackend, RecordOpener
from tests.contract.test_record_stores import (
    OTHER_TENANT,
    T0,
    TENANT,
    commit,
    make_event,
    make_session,
)

PAGE = 3


# Every record backend, opened with pages of PAGE records.
SMALL_PAGES: dict[str, RecordOpener] = {
    name: functools.partial(opener, export_page_size=PAGE)
    for name, opener in RECORD_BACKENDS.items()
}


@pytest.fixture(params=list(SMALL_PAGES))
async def small_pages(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RecordBackend]:
    async with SMALL_PAGES[request.param](tmp_path / "records") as backend:
        yield backend


async def _pages(pages: AsyncIterator[list[Any]]) -> list[list[str]]:
    return [[record.id for record in page] async for page in pages]


async def test_every_event_of_a_person_comes_once_across_pages(
    small_pages: RecordBackend,
) -> None:
    # Ten events of one person under two ids, newest first; others' events stay out.
    mine = [
        make_event(f"e-{n:02d}", profile="p-1" if n % 2 else "p-old", time=T0 + timedelta(n))
        for n in range(10)
    ]
    others = [
        make_event("x-1", profile="p-2", time=T0 + timedelta(days=3, hours=1)),
        make_event("x-2", tenant=OTHER_TENANT, profile="p-1", time=T0),
    ]
    await commit(small_pages, ChangeSet(events=[*mine, *others]))

    pages = await _pages(small_pages.events.pages_for_profiles(TENANT, ["p-1", "p-old"]))

    assert [len(page) for page in pages] == [3, 3, 3, 1]
    assert [event_id for page in pages for event_id in page] == [
        f"e-{n:02d}" for n in reversed(range(10))
    ]


async def test_every_session_of_a_person_comes_once_across_pages(
    small_pages: RecordBackend,
) -> None:
    # Seven sessions, two of them last active at the same moment: newest first, then by id.
    sessions = [
        make_session(f"s-{n}", profile="p-1", update=T0 + timedelta(hours=min(n, 5)))
        for n in range(7)
    ]
    others = [make_session("s-other", profile="p-2", update=T0 + timedelta(hours=2))]
    await commit(small_pages, ChangeSet(sessions=[*sessions, *others]))

    pages = await _pages(small_pages.sessions.pages_for_profiles(TENANT, ["p-1"]))

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [session_id for page in pages for session_id in page] == [
        "s-6",
        "s-5",
        "s-4",
        "s-3",
        "s-2",
        "s-1",
        "s-0",
    ]


async def test_a_person_without_records_has_no_pages(small_pages: RecordBackend) -> None:
    await commit(small_pages, ChangeSet(events=[make_event("e-1", profile="p-2")]))

    assert await _pages(small_pages.events.pages_for_profiles(TENANT, ["p-1"])) == []
    assert await _pages(small_pages.sessions.pages_for_profiles(TENANT, ["p-1"])) == []
    assert await _pages(small_pages.events.pages_for_profiles(TENANT, [])) == []
    # A tenant that never stored anything (no index or alias at all on Elasticsearch).
    assert await _pages(small_pages.events.pages_for_profiles("never", ["p-1"])) == []
