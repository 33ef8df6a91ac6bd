"""The searchable form of a document in Elasticsearch: path-prefixed terms on the document.

Profiles carry free-form traits and events free-form properties. Mapping them as they come
would give Elasticsearch one field per key ever seen (the "mapping explosion"), and one field
would flip between types (a trait is a number in one profile and a string in another). So the
document itself is kept only as `_source` (not indexed), and what the condition language needs
is indexed beside it in two fields of a fixed mapping (`SEARCH_MAPPINGS`), on the document
itself — no nested documents, so one record stays one Lucene document:

- `sk`, a multi-valued `keyword` (indexed, no doc values): one term per fact a condition can
  ask about, each starting with the dotted path and U+0001 (which no path holds), then a tag
  and the value. Path and value in ONE term is what lets a plain term, range, prefix or
  wildcard query ask "this path has this value" without a nested document per path.
- `so`, a `flattened` field (doc values only, not indexed): path → one sort key, for the
  paths holding a number or a string. Flattened keyed doc values are what lets Elasticsearch
  sort by one path's value (nothing else sorts by a part of a multi-valued field without
  scripts, and the minimal distribution has no scripting).

    search_fields({"traits": {"age": 30, "tags": ["a", 1]}}) == {
        "sk": ["traits\\x01~object", "traits.age\\x01n" + code(30),
               "traits.tags\\x01~list", "traits.tags\\x01esa",
               "traits.tags\\x01en" + code(1)],
        "so": {"traits.age": "1" + code(30)},
    }   # code(x) = number_code(number_key(x)), 20 hex digits

Every present path has at least one term (so EXISTS is a prefix query on `path\\x01`), but
for the typed paths whose keyword field holds the value (typed_paths.py: query.py asks that
field of those documents); the tags (fixed, ASCII, each a different first letter or two):

    ~null ~list ~object   the kind, for values without a value term
    ~number               an integer too large even for a double: no comparison matches it
    b1 b0                 a boolean
    n<code>               a number (number_code: order-preserving, fixed width)
    s<text>               a string (ENDS WITH is a wildcard `s*<literal>` on it)
    h<sha256> c<window>   of a string longer than a keyword: hash and windows (below)
    eb1 en<code> es<text> eh<sha256>   a list element (only CONTAINS reads them)

A value of another kind never matches (`true` never meets `1`, `"5"` never meets `5`): each
kind has its own tag. Lists are never entered further, exactly as evaluate.py reads fields, so
an object inside a list has no terms. A path has one direct value, so every fact about the
direct value of a path in one document is about the same value.

Values are stored so that Elasticsearch compares them as evaluate.py does:

- Numbers: `number_key` gives (n, r), n the nearest double and r the exact integer remainder
  `value - n` (0 for floats). Rounding to the nearest double never reverses an order, so
  (n, r) compared in that order orders numbers exactly, integers beyond 2**53 and mixed
  integers and floats included (`2**53 + 1 > 2.0**53`, `1 == 1.0`). `number_code` writes
  (n, r) as 20 hex digits whose byte order is that order: the double's bits made sortable
  (sign bit flipped for positives, every bit for negatives), then r + 2**15 (|r| <= 2**10:
  half the spacing of doubles near 2**63). So a numeric range is a term range between two
  codes under the path's `n` prefix. An integer outside the 64-bit range is read as the
  nearest float (as SQLite and evaluate do), -0.0 as 0.0 (Python calls them equal), and a
  float that is not finite is null (it is null once the document is JSON).
- Strings are read up to their first U+0000 (evaluate's rule). Keywords compare as UTF-8
  bytes, which is code point order: `<`/`>` and sorting match Python's str order. A keyword
  term must stay under Lucene's 32766-byte limit, and `ignore_above` is not used because it
  would leave a long string unsearchable altogether, so `s` holds the text cut to its longest
  prefix of at most `KEYWORD_BYTES` UTF-8 bytes (at a character boundary). A string that was
  cut also gets `h`, the SHA-256 of its whole text, so `==` stays exact for a literal of any
  length (query.py), and `c`, overlapping windows of `KEYWORD_BYTES` bytes every
  `WINDOW_STEP` bytes after the first, so that every substring of at most
  `MAX_LITERAL_BYTES` bytes lies whole in `s` or in one window (CONTAINS), and `z`, its last
  `KEYWORD_BYTES` bytes reversed (code point by code point), so that ENDS WITH is a prefix
  query on `z` for it. A string that fits a keyword has no `z`: `s` holds it whole, so ENDS
  WITH is a wildcard `s*<literal>` confined to the path (as CONTAINS is). A reversed copy of
  every string doubled the terms of string values, and indexing the search terms is most of
  Elasticsearch's CPU per stored event (benchmarks/RESULTS.md: 212 → 159 µs per event of
  20-event requests without it). Ordering, STARTS
  WITH and ENDS WITH are exact for literals of at most `MAX_LITERAL_BYTES` bytes (a cut value
  then differs from the literal within the kept part or has it as a proper prefix); query.py
  refuses longer literals there rather than answer approximately. A list element keeps only
  what equality needs: `es` with its whole text when it fits a keyword, else `eh` alone (the
  hash decides equality with a literal of that length). CONTAINS on a string is a `wildcard`
  query `path\\x01s*...*`: its fixed prefix confines it to the terms of that path.
- Booleans: `b1`/`b0`, never confused with numbers.

Bounds, and what lies beyond them:

- Only keys a condition can name (`[A-Za-z0-9_-]+`, see ast.SEGMENT), paths of at most
  `MAX_DEPTH` (= ast.MAX_PATH_SEGMENTS) segments and `MAX_PATH_BYTES` bytes get terms (a
  term is path + value, and must stay under Lucene's limit): no condition can reach others
  (query.py refuses longer paths).
- At most `MAX_ENTRIES` values per document (a direct value or a list element, with all its
  terms), taken breadth first (shallow paths first, list elements after their list). A
  document with more is marked by the term `TRUNCATED` (of the empty path, which no
  condition reads) and the values past the limit are NOT searchable in Elasticsearch: a
  condition on them answers as if the field were missing, unlike the embedded SQLite store,
  which searches every value.

Installations created before this representation indexed a `nested` field `sx` instead (one
Lucene document per path); legacy.py keeps searches off such partitions until a reshard has
re-encoded them (docs/distributed.md).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from tessera.query.ast import MAX_PATH_SEGMENTS, SEGMENT
from tessera.storage.elastic.typed_paths import NO_TYPED_PATHS, in_typed_form

# The terms of every fact a condition can ask about (keyword, indexed only).
SEARCH_FIELD: Final = "sk"
# Path → sort key (flattened, doc values only).
SORT_FIELD: Final = "so"
SEARCH_FIELDS: Final = (SEARCH_FIELD, SORT_FIELD)
# The nested field of the earlier representation (legacy.py, codec.moved).
LEGACY_FIELD: Final = "sx"

SEP: Final = "\x01"
MAX_DEPTH: Final = MAX_PATH_SEGMENTS
MAX_PATH_BYTES: Final = 512
MAX_ENTRIES: Final = 1000
# Under Lucene's 32766-byte term limit with the path, separator and tag in front.
KEYWORD_BYTES: Final = 32000
WINDOW_STEP: Final = 16000
# The longest literal ordering, prefixes, suffixes and substrings are exact for: a substring
# that long starts before some window's start + WINDOW_STEP and so ends inside that window
# (a window may begin up to 3 bytes early and end up to 3 bytes short, at character bounds).
MAX_LITERAL_BYTES: Final = KEYWORD_BYTES - WINDOW_STEP - 8
TRUNCATED: Final = SEP + "~truncated"

# Sort keys: numbers before strings (query.sort_clause).
SORT_NUMBER: Final = "1"
SORT_STRING: Final = "2"

# Bookkeeping no condition is about (the apply-once marks, model/applied.py): never indexed.
UNSEARCHED_PATHS: Final = frozenset({"metadata.applied", "metadata.request"})

SEARCH_MAPPINGS: Final[dict[str, dict[str, Any]]] = {
    # Only ever matched, never sorted on or aggregated: no doc values.
    SEARCH_FIELD: {"type": "keyword", "doc_values": False},
    # Only ever sorted on: no inverted index.
    SORT_FIELD: {"type": "flattened", "index": False},
}

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_SIGN: Final = 1 << 63
_ALL_BITS: Final = (1 << 64) - 1
_REMAINDER_OFFSET: Final = 1 << 15


def search_fields(
    document: Mapping[str, Any], typed: frozenset[str] = NO_TYPED_PATHS
) -> dict[str, Any]:
    """The search fields of one document (a profile, event or session as plain builtins):
    `{SEARCH_FIELD: [terms], SORT_FIELD: {path: sort key}}` (the latter only when not empty).

    A path of `typed` (typed_paths.py) whose value its keyword field holds exactly gets no
    terms and no sort key: query.py reads it from that field.

    On the write path of every record, so written for speed: plain dicts and lists are told
    by their exact type, keys and paths already checked are remembered (``_path_of``), a
    string's terms are made inline, and the terms of a top-level object seen before (an
    event's metadata, context and request repeat across the events of a request, the
    request headers across requests) are taken from ``_SUBTREES``. The terms are the same
    either way: when the document holds more values than MAX_ENTRIES, the breadth-first walk
    decides which are kept, exactly as it always has."""
    top = _walk("", 0, document, typed, defer_objects=True)
    if top.truncated:
        return _fields(top.terms, top.sort)
    terms, sort, entries = top.terms, top.sort, top.entries
    for path, child in top.deferred:
        shared = _subtree(path, child, typed)
        entries += shared.entries
        if shared.truncated or entries > MAX_ENTRIES - 1:
            # Too many values: which are kept depends on the order of the whole walk.
            walked = _walk("", 0, document, typed, defer_objects=False)
            return _fields(walked.terms, walked.sort)
        terms.extend(shared.terms)
        sort.update(shared.sort)
    return _fields(terms, sort)


@dataclass(slots=True)
class _Walked:
    terms: list[str] = field(default_factory=list)
    sort: dict[str, str] = field(default_factory=dict)
    entries: int = 0
    truncated: bool = False
    # Plain objects met at the top and not entered (defer_objects): (path, object).
    deferred: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _walk(
    start: str,
    start_depth: int,
    node: Mapping[str, Any],
    typed: frozenset[str],
    *,
    defer_objects: bool,
) -> _Walked:
    """The terms of the values under `node` (at path `start`), breadth first, up to
    MAX_ENTRIES - 1 values (then TRUNCATED ends the terms). With `defer_objects`, plain
    objects directly under `node` get their own term but are not entered: they are listed
    in `deferred` for the caller."""
    out = _Walked()
    terms, sort = out.terms, out.sort
    entries = 0
    pending: deque[tuple[str, int, Mapping[str, Any]]] = deque([(start, start_depth, node)])
    while pending:
        prefix, depth, current = pending.popleft()
        children = _children_of(prefix)
        for key, value in current.items():
            path = children.get(key, _UNKNOWN)
            if path is _UNKNOWN:
                path = _path_of(prefix, key, children)
            if path is None or (path in typed and in_typed_form(value)):
                continue
            kind = type(value)
            if kind is str and len(value) * 4 <= KEYWORD_BYTES and "\x00" not in value:
                # The common case, a short string, inline: what _string_terms would give.
                if entries >= MAX_ENTRIES - 1:
                    return _truncated(out, entries)
                entries += 1
                head = path + SEP
                terms.append(head + "s" + value)
                sort[path] = SORT_STRING + value
                continue
            found = _value_terms(value, element=False)
            if not found:
                continue
            if entries >= MAX_ENTRIES - 1:
                return _truncated(out, entries)
            entries += 1
            head = path + SEP
            first = found[0]
            terms.append(head + first)
            if len(found) > 1:
                terms.extend([head + term for term in found[1:]])
            tag = first[0]
            if tag == "n" or tag == "s":
                sort[path] = (SORT_NUMBER if tag == "n" else SORT_STRING) + first[1:]
            if kind is dict or (kind is not list and isinstance(value, Mapping)):
                if depth + 1 < MAX_DEPTH:
                    if defer_objects and kind is dict and depth == start_depth and value:
                        out.deferred.append((path, value))
                    else:
                        pending.append((path, depth + 1, value))
            elif kind is list or isinstance(value, list | tuple):
                for item in value:
                    element = _value_terms(item, element=True)
                    if not element:
                        continue
                    if entries >= MAX_ENTRIES - 1:
                        return _truncated(out, entries)
                    entries += 1
                    terms.append(head + element[0])
    out.entries = entries
    return out


def _truncated(out: _Walked, entries: int) -> _Walked:
    out.terms.append(TRUNCATED)
    out.entries = entries
    out.truncated = True
    return out


# (path, typed paths, the object as MessagePack) → the terms of the values under it. MessagePack
# tells apart what a condition tells apart (1, 1.0, True and "1"; string and integer keys).
# Bounded: emptied when full, so free-form objects cannot grow it forever.
_SUBTREES: dict[tuple[str, frozenset[str], bytes], _Walked] = {}
_MAX_REMEMBERED_SUBTREES: Final = 4096
_pack = msgspec.msgpack.Encoder().encode


def _subtree(path: str, value: dict[str, Any], typed: frozenset[str]) -> _Walked:
    try:
        key = (path, typed, _pack(value))
    except (TypeError, ValueError, UnicodeEncodeError, OverflowError):
        # Not plain JSON data (or an integer beyond 64 bits, a lone surrogate): walk it.
        return _walk(path, 1, value, typed, defer_objects=False)
    walked = _SUBTREES.get(key)
    if walked is None:
        walked = _walk(path, 1, value, typed, defer_objects=False)
        if len(_SUBTREES) >= _MAX_REMEMBERED_SUBTREES:
            _SUBTREES.clear()
        _SUBTREES[key] = walked
    return walked


# prefix → key → the dotted path, or None when no condition can name it. Documents of one
# kind repeat the same few hundred paths; bounded, so free-form keys cannot grow it forever.
_PATHS: dict[str, dict[str, str | None]] = {}
_MAX_REMEMBERED_PATHS: Final = 20_000
_remembered_paths = 0
# Not a path (no path holds U+0000): a key not remembered yet.
_UNKNOWN: Final = "\x00"


def _children_of(prefix: str) -> dict[str, str | None]:
    """The remembered paths of the keys under `prefix` (filled by _path_of)."""
    children = _PATHS.get(prefix)
    if children is None:
        _make_room()
        children = _PATHS[prefix] = {}
    return children


def _path_of(prefix: str, key: object, children: dict[str, str | None]) -> str | None:
    if not isinstance(key, str):
        return None  # a key of another kind (in a caller's own mapping) is never searchable
    path: str | None = None
    if SEGMENT.fullmatch(key):
        path = f"{prefix}.{key}" if prefix else key
        if path in UNSEARCHED_PATHS or len(path) > MAX_PATH_BYTES:
            path = None
    _make_room()
    children[key] = path
    return path


def _make_room() -> None:
    """Count one more remembered entry; forget them all once there are too many."""
    global _remembered_paths
    if _remembered_paths >= _MAX_REMEMBERED_PATHS:
        # A walk holding a forgotten prefix's dict only fills that orphan: harmless.
        _PATHS.clear()
        _remembered_paths = 0
    _remembered_paths += 1


def _fields(terms: list[str], sort: dict[str, str]) -> dict[str, Any]:
    return {SEARCH_FIELD: terms, SORT_FIELD: sort} if sort else {SEARCH_FIELD: terms}


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


def number_code(key: tuple[float, int]) -> str:
    """(n, r) as 20 hex digits whose order as text is the order of (n, r)."""
    nearest, remainder = key
    (bits,) = struct.unpack(">Q", struct.pack(">d", nearest + 0.0))
    bits = bits ^ _ALL_BITS if bits & _SIGN else bits | _SIGN
    return f"{bits:016x}{remainder + _REMAINDER_OFFSET:04x}"


def text_of(value: str) -> str:
    """The string as evaluate reads it: up to its first U+0000."""
    if "\x00" not in value:
        return value
    return value[: value.index("\x00")]


def text_hash(text: str) -> str:
    return hashlib.sha256(_utf8(text)).hexdigest()


def keyword_cut(text: str) -> tuple[str, bool]:
    """The longest prefix of at most KEYWORD_BYTES UTF-8 bytes, and whether it is shorter."""
    if len(text) * 4 <= KEYWORD_BYTES:
        return text, False  # at most 4 bytes a character: it fits without encoding it
    data = _utf8(text)
    if len(data) <= KEYWORD_BYTES:
        return text, False
    return data[: _boundary(data, KEYWORD_BYTES)].decode(), True


def _value_terms(value: Any, *, element: bool) -> list[str]:
    """The terms (tag and value, without the path) of one value; a list element has one term
    at most, and only when it is a scalar (others equal no literal)."""
    kind = type(value)
    if kind is str:
        text = text_of(value)
        return _element_terms(text) if element else _string_terms(text)
    if kind is bool:
        return [("eb" if element else "b") + ("1" if value else "0")]
    if kind is int or kind is float:
        key = number_key(value)
        if key is None:
            if kind is float:
                # NaN and infinities: JSON has no spelling for them, the document says null.
                return [] if element else ["~null"]
            return [] if element else ["~number"]
        return [("en" if element else "n") + number_code(key)]
    if element:
        return []
    if value is None:
        return ["~null"]
    if kind is dict:
        return ["~object"]
    if kind is list:
        return ["~list"]
    # Subclasses and other containers (the caller passes msgspec.to_builtins output, which
    # has none): the slow checks.
    if isinstance(value, str):
        return _value_terms(str(value), element=element)
    if isinstance(value, int | float):  # not a bool: bool has no subclasses
        return _value_terms(value + 0, element=element)
    if isinstance(value, Mapping):
        return ["~object"]
    if isinstance(value, list | tuple):
        return ["~list"]
    # Not a JSON value: nothing to search.
    return []


def _element_terms(text: str) -> list[str]:
    head, cut = keyword_cut(text)
    return ["eh" + text_hash(text)] if cut else ["es" + head]


def _string_terms(text: str) -> list[str]:
    head, cut = keyword_cut(text)
    if not cut:
        return ["s" + head]
    data = _utf8(text)
    terms = ["s" + head, "h" + text_hash(text)]
    start = _boundary(data, WINDOW_STEP)
    while True:
        end = _boundary(data, start + KEYWORD_BYTES)
        terms.append("c" + data[start:end].decode())
        if end >= len(data):
            break
        start = _boundary(data, start + WINDOW_STEP)
    tail = _boundary(data, len(data) - KEYWORD_BYTES, forward=True)
    terms.append("z" + data[tail:].decode()[::-1])
    return terms


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
