"""The searchable form of a document in Elasticsearch: one bounded list of typed entries.

Profiles carry free-form traits and events free-form properties. Mapping them as they come
would give Elasticsearch one field per key ever seen (the "mapping explosion"), and one field
would flip between types (a trait is a number in one profile and a string in another). So the
document itself is kept only as `_source` (not indexed), and what the condition language needs
is indexed beside it, in one `nested` field `sx` with a fixed mapping (`SEARCH_MAPPING`):

    search_fields({"traits": {"age": 30, "tags": ["a", 1]}}) == [
        {"p": "traits", "k": "object"},
        {"p": "traits.age", "k": "number", "n": 30.0, "r": 0},
        {"p": "traits.tags", "k": "list"},
        {"p": "traits.tags", "k": "element", "s": "a"},
        {"p": "traits.tags", "k": "element", "n": 1.0, "r": 0},
    ]

One entry per present path (so EXISTS, IS NULL and "value of another kind" are answerable),
with the dotted path `p`, the kind `k` (null, bool, number, string, list, object) and the value
in the field of its kind. The elements of a list get entries of kind "element" at the list's
own path: CONTAINS looks at them, `==` (which never matches a list) does not. Lists are never
entered further, exactly as evaluate.py reads fields, so an object inside a list has no entries.

Values are stored so that Elasticsearch compares them as evaluate.py does:

- Numbers: `n` (double) is the nearest double and `r` (long) the exact integer remainder
  `value - n` (0 for floats). Rounding to the nearest double never reverses an order, so
  (n, r) compared in that order orders numbers exactly, integers beyond 2**53 and mixed
  integers and floats included (`2**53 + 1 > 2.0**53`, `1 == 1.0`). An integer outside the
  64-bit range is read as the nearest float (as SQLite and evaluate do), -0.0 is stored as 0.0
  (Lucene orders -0.0 below 0.0; Python calls them equal), and a float that is not finite is
  null (it is null once the document is JSON). An integer too large even for a double (beyond
  ~1.8e308) is kind "number" with no value: no comparison matches it.
- Strings are read up to their first U+0000 (evaluate's rule). Every string kind uses plain
  `keyword`s, which compare as UTF-8 bytes, which is code point order: `<`/`>` and sorting
  match Python's str order. A keyword term must stay under Lucene's 32766-byte limit, and
  `ignore_above` is not used because it would leave a long string unsearchable altogether, so:
  `s` holds the text, cut to its longest prefix of at most `KEYWORD_BYTES` UTF-8 bytes (at a
  character boundary). A string that was cut also gets `h`, the SHA-256 of its whole text, so
  `==` stays exact for a literal of any length (query.py), and `c`, overlapping windows of
  `KEYWORD_BYTES` bytes every `WINDOW_STEP` bytes after the first, so that every substring of
  at most `MAX_LITERAL_BYTES` bytes lies whole in `s` or in one window (CONTAINS). `z` holds
  the text reversed (code point by code point), of its last `KEYWORD_BYTES` bytes: ENDS WITH
  is a prefix query on it. Ordering, STARTS WITH and ENDS WITH are exact for literals of at
  most `MAX_LITERAL_BYTES` bytes (a cut value then differs from the literal within the kept
  part or has it as a proper prefix); query.py refuses longer literals there rather than
  answer approximately. List elements get only `s` (and `h`): on a list, CONTAINS means "some
  element equals". The Elasticsearch `wildcard` field type would serve substrings better, but
  it is not part of every distribution (not of the minimal one the tests run on), so CONTAINS
  is a `wildcard` query on keywords, which scans the terms of `sx.s`/`sx.c`: fine for
  thousands of distinct strings per shard, slow for many millions.
- Booleans: `b` (boolean), never confused with numbers.

Bounds, and what lies beyond them:

- Only keys a condition can name (`[A-Za-z0-9_-]+`, see ast.SEGMENT) and paths of at most
  `MAX_DEPTH` (= ast.MAX_PATH_SEGMENTS) segments get entries: no condition can reach others.
- At most `MAX_ENTRIES` entries per document, taken breadth first (shallow paths first, list
  elements after the entry of their list). A document with more is marked by one last entry
  `{"p": "", "k": "truncated"}` (no condition reads the empty path) and the values past the
  limit are NOT searchable in Elasticsearch: a condition on them answers as if the field
  were missing, unlike the embedded SQLite store, which searches every value. 1000 entries
  fit any reasonable profile or event and keep every document well under Elasticsearch's
  nested-object limit (`index.mapping.nested_objects.limit`, 10000).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

from tessera.query.ast import MAX_PATH_SEGMENTS, SEGMENT

SEARCH_FIELD: Final = "sx"
MAX_DEPTH: Final = MAX_PATH_SEGMENTS
MAX_ENTRIES: Final = 1000
# Under Lucene's 32766-byte term limit, with room to spare.
KEYWORD_BYTES: Final = 32000
WINDOW_STEP: Final = 16000
# The longest literal ordering, prefixes, suffixes and substrings are exact for: a substring
# that long starts before some window's start + WINDOW_STEP and so ends inside that window
# (a window may begin up to 3 bytes early and end up to 3 bytes short, at character bounds).
MAX_LITERAL_BYTES: Final = KEYWORD_BYTES - WINDOW_STEP - 8
TRUNCATED: Final = {"p": "", "k": "truncated"}

# Bookkeeping no condition is about (the apply-once marks, model/applied.py): never indexed.
UNSEARCHED_PATHS: Final = frozenset({"metadata.applied", "metadata.request"})

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

SEARCH_MAPPING: Final[dict[str, Any]] = {
    "type": "nested",
    "properties": {
        "p": {"type": "keyword"},
        "k": {"type": "keyword"},
        "b": {"type": "boolean"},
        "n": {"type": "double"},
        "r": {"type": "long"},
        "s": {"type": "keyword"},
        # Only ever matched, never sorted on: no doc values.
        "h": {"type": "keyword", "doc_values": False},
        "c": {"type": "keyword", "doc_values": False},
        "z": {"type": "keyword", "doc_values": False},
    },
}


def search_fields(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `sx` entries of one document (a profile, event or session as plain builtins)."""
    entries: list[dict[str, Any]] = []
    pending: deque[tuple[str, int, Mapping[str, Any]]] = deque([("", 0, document)])
    while pending:
        prefix, depth, node = pending.popleft()
        for key, value in node.items():
            if not isinstance(key, str) or not SEGMENT.fullmatch(key):
                continue
            path = f"{prefix}.{key}" if prefix else key
            if path in UNSEARCHED_PATHS:
                continue
            if not _add(entries, _entry(path, value, element=False)):
                return entries
            if isinstance(value, list | tuple):
                for item in value:
                    element = _entry(path, item, element=True)
                    if element is not None and not _add(entries, element):
                        return entries
            elif isinstance(value, Mapping) and depth + 1 < MAX_DEPTH:
                pending.append((path, depth + 1, value))
    return entries


def number_key(value: int | float) -> tuple[float, int] | None:
    """(n, r) for a JSON number as evaluate reads it; None when no double can hold it.

    Shared with query.py so that literals and stored values go through the same rounding.
    """
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        nearest = float(value)
        return nearest + 0.0, value - int(nearest)
    try:
        nearest = float(value)
    except OverflowError:
        return None
    if not math.isfinite(nearest):
        return None
    return nearest + 0.0, 0


def text_of(value: str) -> str:
    """The string as evaluate reads it: up to its first U+0000."""
    cut = value.find("\x00")
    return value if cut < 0 else value[:cut]


def text_hash(text: str) -> str:
    return hashlib.sha256(_utf8(text)).hexdigest()


def keyword_cut(text: str) -> tuple[str, bool]:
    """The longest prefix of at most KEYWORD_BYTES UTF-8 bytes, and whether it is shorter."""
    data = _utf8(text)
    if len(data) <= KEYWORD_BYTES:
        return text, False
    return data[: _boundary(data, KEYWORD_BYTES)].decode(), True


def _string_entry(path: str, text: str, *, element: bool) -> dict[str, Any]:
    data = _utf8(text)
    head, cut = keyword_cut(text)
    entry: dict[str, Any] = {"p": path, "k": "element" if element else "string", "s": head}
    if cut:
        entry["h"] = text_hash(text)
    if element:
        return entry
    if cut:
        windows = []
        start = _boundary(data, WINDOW_STEP)
        while True:
            end = _boundary(data, start + KEYWORD_BYTES)
            windows.append(data[start:end].decode())
            if end >= len(data):
                break
            start = _boundary(data, start + WINDOW_STEP)
        entry["c"] = windows
        tail = _boundary(data, len(data) - KEYWORD_BYTES, forward=True)
        entry["z"] = data[tail:].decode()[::-1]
    else:
        entry["z"] = text[::-1]
    return entry


def _utf8(text: str) -> bytes:
    # A lone surrogate cannot be stored as JSON at all; never fail on one here.
    return text.encode("utf-8", "replace")


def _boundary(data: bytes, offset: int, *, forward: bool = False) -> int:
    """The character boundary nearest `offset` (at or before it, or after with `forward`)."""
    offset = max(0, min(offset, len(data)))
    step = 1 if forward else -1
    while 0 < offset < len(data) and data[offset] & 0xC0 == 0x80:
        offset += step
    return offset


def _add(entries: list[dict[str, Any]], entry: dict[str, Any] | None) -> bool:
    """Append, keeping room for the truncation mark; False once the document is cut off."""
    if entry is None:
        return True
    if len(entries) >= MAX_ENTRIES - 1:
        entries.append(dict(TRUNCATED))
        return False
    entries.append(entry)
    return True


def _entry(path: str, value: Any, *, element: bool) -> dict[str, Any] | None:
    """The entry of one value; for a list element only scalars (others equal no literal)."""
    if isinstance(value, bool):
        return {"p": path, "k": "element" if element else "bool", "b": value}
    if isinstance(value, int | float):
        key = number_key(value)
        if key is None and isinstance(value, float):
            # NaN and infinities: JSON has no spelling for them, the stored document says null.
            return None if element else {"p": path, "k": "null"}
        entry: dict[str, Any] = {"p": path, "k": "element" if element else "number"}
        if key is not None:
            entry["n"], entry["r"] = key
        return entry
    if isinstance(value, str):
        return _string_entry(path, text_of(value), element=element)
    if element:
        return None
    if value is None:
        return {"p": path, "k": "null"}
    if isinstance(value, list | tuple):
        return {"p": path, "k": "list"}
    if isinstance(value, Mapping):
        return {"p": path, "k": "object"}
    # Not a JSON value (the caller passes msgspec.to_builtins output): nothing to search.
    return None
