"""What a stored Elasticsearch document carries: search terms for what conditions search."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from tessera.identity.keys import read_path
from tessera.model.common import Ref
from tessera.model.profile import new_profile
from tessera.model.session import Session, new_session
from tessera.storage.elastic import codec
from tessera.storage.elastic.fields import SEARCH_FIELD, SEARCH_FIELDS, SEP, SORT_FIELD
from tessera.storage.elastic.typed_paths import in_typed_form, typed_paths
from tests.contract.test_record_stores import make_event

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def _fields(document: bytes) -> set[str]:
    return set(msgspec.json.decode(document)) & set(SEARCH_FIELDS)


def test_profiles_and_events_carry_search_terms_and_sessions_none() -> None:
    profile = new_profile("p-1", "acme", NOW)
    profile.traits = {"plan": "pro"}
    session = new_session("s-1", "acme", Ref("p-1"), Ref("web"), NOW)
    session.context = {"page": {"url": "https://shop.example.com/"}}

    assert _fields(codec.searchable(profile)) == set(SEARCH_FIELDS)
    assert _fields(codec.searchable(make_event("e-1"))) == set(SEARCH_FIELDS)
    # No condition searches sessions: building and indexing their terms would be wasted work.
    assert _fields(codec.searchable(session)) == set()
    stored = msgspec.json.decode(codec.searchable(session))
    assert codec.decode(stored, Session) == session
    moved = msgspec.json.decode(codec.moved(stored, Session, 2))
    assert _fields(msgspec.json.encode(moved)) == set()


def test_written_and_moved_documents_leave_their_typed_paths_to_the_mapping() -> None:
    profile = new_profile("p-1", "acme", NOW)
    event = make_event("e-1")
    for kind, record in (("profile", profile), ("event", event)):
        written = msgspec.json.decode(codec.searchable(record))
        moved = msgspec.json.decode(codec.moved(dict(written), type(record), 2))
        record_document = msgspec.to_builtins(record)
        in_field = {
            path for path in typed_paths(kind) if in_typed_form(read_path(record_document, path))
        }
        assert {"id", "tenant"} <= in_field, kind
        for document in (written, moved):
            paths = {term.partition(SEP)[0] for term in document[SEARCH_FIELD]}
            assert paths, kind
            assert not paths & in_field, kind
            assert not set(document.get(SORT_FIELD, {})) & in_field, kind
