"""Record ⇄ Elasticsearch document.

A stored document is the record as JSON (msgspec, exactly as the embedded store keeps it) plus
its search fields (fields.py). Encoding goes straight to bytes for the bulk body;
decoding converts the `_source` Elasticsearch returns (already parsed by the client's msgspec
serializer) back into the record type, which also turns the ISO times back into datetimes.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from tessera.model.decoding import from_builtins
from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.storage.elastic.fields import LEGACY_FIELD, SEARCH_FIELDS, search_fields
from tessera.storage.elastic.mappings import MOVED_FIELD
from tessera.storage.elastic.typed_paths import typed_paths

R = TypeVar("R", Event, Session, Profile)

_encode = msgspec.json.Encoder().encode
# The kinds that carry search fields, and the typed paths each leaves to its mapping. Sessions
# carry none (see searchable).
_TYPED_PATHS_OF: dict[type[Any], frozenset[str]] = {
    Event: typed_paths("event"),
    Profile: typed_paths("profile"),
}


def searchable(record: Event | Session | Profile) -> bytes:
    """The stored document of an event, session or profile: the record and its search fields.
    Sessions get none: no condition searches sessions (they are read by id, or listed by
    their profile's id, a mapped field), and their search terms cost as much to build and to
    index as a profile's, on every request."""
    document = msgspec.to_builtins(record)
    _add_search_fields(document, type(record))
    return _encode(document)


def moved(
    source: dict[str, Any], kind: type[Event] | type[Session] | type[Profile], generation: int
) -> bytes:
    """A stored `_source` as the document a reshard writes into `generation`: read back into
    the record (so the search fields are rebuilt from exactly what the writer would encode,
    also for a document of an earlier representation), with them and the `mv` mark of the
    copy."""
    _drop_search_fields(source)
    document = msgspec.to_builtins(from_builtins(source, kind))
    _add_search_fields(document, kind)
    document[MOVED_FIELD] = generation
    return _encode(document)


def _add_search_fields(document: dict[str, Any], kind: type[Any]) -> None:
    typed = _TYPED_PATHS_OF.get(kind)
    if typed is not None:
        document.update(search_fields(document, typed))


def plain(document: Any) -> bytes:
    return _encode(document)


def decode(source: dict[str, Any], kind: type[R]) -> R:
    _drop_search_fields(source)
    return from_builtins(source, kind)


def _drop_search_fields(source: dict[str, Any]) -> None:
    # Never in `_source` of an index of this version (mappings.py), but a partition created
    # with an earlier mapping stores the fields it does not exclude.
    for name in (*SEARCH_FIELDS, LEGACY_FIELD):
        source.pop(name, None)
