"""Explicit mappings of every kind of document, and the templates that carry them.

Only the record's own fields are mapped, with their types; the document stays whole in
`_source`. The free-form parts (traits, data, properties, context …) are `enabled: false`:
kept in `_source`, never indexed, so a new key in one event never adds a field to the index
(no "mapping explosion", no field flipping between types). Searching them goes through the search
fields (fields.py): a keyword of path-prefixed terms and a flattened field of sort keys, with
a fixed mapping. `dynamic: false` at the top keeps a field
added to a record type later from being guessed into the mapping: it is stored, not indexed,
until the mapping names it.

The search fields are left out of `_source`: they are derived from the document
(fields.search_fields), so storing them twice would only double the disk used. Whatever copies
documents from one index to another (a reindex) must therefore rebuild them with
search_fields, not copy `_source` alone (reshard.py does, through codec.moved).

`mv` (indexed only, not in `_source` either) marks a document a reshard copied into a new
generation; the read alias hides such copies until the partition they came from is swapped
out (reshard.py), so a reader never sees a record there twice.
"""

from __future__ import annotations

from typing import Any, Final

from tessera.storage.elastic.fields import SEARCH_FIELDS, SEARCH_MAPPINGS

# The generation a reshard copied the document into (reshard.py).
MOVED_FIELD: Final = "mv"

Mapping = dict[str, Any]

# Longer values are kept in _source but not indexed: a term over Lucene's 32766-byte limit
# would make Elasticsearch refuse the whole document (8191 characters are at most 32764 bytes).
KEYWORD: Final[Mapping] = {"type": "keyword", "ignore_above": 8191}
DATE: Final[Mapping] = {"type": "date"}
BOOLEAN: Final[Mapping] = {"type": "boolean"}
LONG: Final[Mapping] = {"type": "long"}
# Stored in _source only.
OPAQUE: Final[Mapping] = {"type": "object", "enabled": False}
REF: Final[Mapping] = {"properties": {"id": KEYWORD}}


def _document(properties: Mapping, *, searchable: bool = True) -> Mapping:
    mapping: Mapping = {"dynamic": False, "properties": dict(properties)}
    if searchable:
        mapping["properties"].update(SEARCH_MAPPINGS)
        mapping["properties"][MOVED_FIELD] = {"type": "integer"}
        mapping["_source"] = {"excludes": [*SEARCH_FIELDS, MOVED_FIELD]}
    return mapping


EVENT: Final = _document(
    {
        "id": KEYWORD,
        "tenant": KEYWORD,
        "type": KEYWORD,
        "time": DATE,
        "metadata": {
            "properties": {
                # Both insert times (model/event.py): `time.insert` as in Tracardi, `insert`
                # for events stored by earlier versions and the reads that sort on it.
                "insert": DATE,
                "time": {"properties": {"insert": DATE}},
                "status": KEYWORD,
                "valid": BOOLEAN,
                "ip": KEYWORD,
                "profile_less": BOOLEAN,
                "internal": BOOLEAN,
                "errors": OPAQUE,
                "automation": {
                    "properties": {"rules": KEYWORD, "workflows": KEYWORD, "errors": OPAQUE}
                },
            }
        },
        "source": REF,
        "session": REF,
        "profile": REF,
        "properties": OPAQUE,
        "context": OPAQUE,
        "options": OPAQUE,
        "tags": KEYWORD,
        "request": OPAQUE,
    }
)

SESSION: Final = _document(
    {
        "id": KEYWORD,
        "tenant": KEYWORD,
        "profile": REF,
        "metadata": {
            "properties": {
                "time": {"properties": {"insert": DATE, "update": DATE}},
                "channel": KEYWORD,
                "visit": {"properties": {"number": LONG, "start": DATE, "last": DATE}},
            }
        },
        "source": REF,
        "events": LONG,
        "context": OPAQUE,
        "properties": OPAQUE,
        "device": OPAQUE,
    }
)

PROFILE: Final = _document(
    {
        "id": KEYWORD,
        "tenant": KEYWORD,
        "metadata": {
            "properties": {
                "time": {"properties": {"insert": DATE, "update": DATE, "last_visit": DATE}},
                "identity": OPAQUE,
                "merges": OPAQUE,
            }
        },
        # Every id that resolves to the profile: get-by-alias is a term query on it.
        "ids": KEYWORD,
        "stats": OPAQUE,
        "traits": OPAQUE,
        "data": OPAQUE,
        "segments": KEYWORD,
        "interests": OPAQUE,
        "consents": OPAQUE,
        "active": BOOLEAN,
    }
)

# Salted hash of a merge-key value → the profile holding it; the document id is the digest.
IDENTITY: Final = _document(
    {"tenant": KEYWORD, "digest": KEYWORD, "profile_id": KEYWORD}, searchable=False
)

# A profile merged into another, as it was; the document id is the retired profile's id.
RETIRED: Final = _document(
    {"tenant": KEYWORD, "id": KEYWORD, "survivor_id": KEYWORD, "profile": OPAQUE},
    searchable=False,
)

MAPPINGS: Final[dict[str, Mapping]] = {
    "event": EVENT,
    "session": SESSION,
    "profile": PROFILE,
    "identity": IDENTITY,
    "retired": RETIRED,
}
