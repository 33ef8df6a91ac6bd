"""Record ⇄ Elasticsearch document.

A stored document is the record as JSON (msgspec, exactly as the embedded store keeps it) plus
`sx`, its searchable form (fields.py). Encoding goes straight to bytes for the bulk body;
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
from tessera.storage.elastic.fields import SEARCH_FIELD, search_fields
from tessera.storage.elastic.mappings import MOVED_FIELD

R = TypeVar("R", Event, Session, Profile)

_encode = msgspec.json.Encoder().encode


def searchable(record: Event | Session | Profile) -> bytes:
    """The stored document of an event, session or profile: the record and its `sx`."""
    document = msgspec.to_builtins(record)
    document[SEARCH_FIELD] = search_fields(document)
    return _encode(document)


def moved(
    source: dict[str, Any], kind: type[Event] | type[Session] | type[Profile], generation: int
) -> bytes:
    """A stored `_source` as the document a reshard writes into `generation`: read back into
    the record (so `sx` is rebuilt from exactly what the writer would encode), with `sx` and
    the `mv` mark of the copy."""
    source.pop(SEARCH_FIELD, None)
    document = msgspec.to_builtins(from_builtins(source, kind))
    document[SEARCH_FIELD] = search_fields(document)
    document[MOVED_FIELD] = generation
    return _encode(document)


def plain(document: Any) -> bytes:
    return _encode(document)


def decode(source: dict[str, Any], kind: type[R]) -> R:
    source.pop(SEARCH_FIELD, None)
    return from_builtins(source, kind)
