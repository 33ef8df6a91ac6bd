"""Paths whose values the record's own mapping already indexes as keywords.

Every event carries its id, type, source, session and profile ids; every profile its id. Their
values are mapped as `keyword` fields (mappings.py) for the store's own look-ups, and they are
among the costliest search terms there are: most are unique to the record, and a unique term
is a new entry in the terms dictionary of every segment it lands in. Indexing them twice (as
the field and again as a search term) took about a fifth of Elasticsearch's CPU per event
(benchmarks/RESULTS.md). So fields.py leaves such a value out of the search terms and the sort
keys when the keyword field holds it exactly (`in_typed_form`), and query.py answers a
condition on the path from that field instead.

A value the field cannot hold exactly keeps its search terms: null, any other kind than a
string, a string holding U+0000 (a condition reads it only up to there; the keyword holds all
of it), or a string longer than `TYPED_MAX_CHARS` (`ignore_above` counts UTF-16 units, at
most two per character, so 4,000 characters always fit under its 8,191). Collected ids and
types are at most 128 characters, so in practice every value is in the typed form; the other
form keeps the rare rest exact, and the documents stored before this representation (every
path in the search terms) stay readable without a reshard: query.py tells the two forms apart
per document by whether the path has search terms.
"""

from __future__ import annotations

from typing import Any, Final

TYPED_MAX_CHARS: Final = 4000

TYPED_KEYWORD_PATHS: Final[dict[str, frozenset[str]]] = {
    "event": frozenset(
        {
            "id",
            "tenant",
            "type",
            "source.id",
            "session.id",
            "profile.id",
            "metadata.status",
            "metadata.ip",
        }
    ),
    "profile": frozenset({"id", "tenant"}),
}

NO_TYPED_PATHS: Final[frozenset[str]] = frozenset()


def typed_paths(entity: str | None) -> frozenset[str]:
    """The typed keyword paths of an entity's documents (none for an unknown entity)."""
    if entity is None:
        return NO_TYPED_PATHS
    return TYPED_KEYWORD_PATHS.get(entity, NO_TYPED_PATHS)


def in_typed_form(value: Any) -> bool:
    """Whether the keyword field holds this value exactly as a condition reads it."""
    return type(value) is str and len(value) <= TYPED_MAX_CHARS and "\x00" not in value
