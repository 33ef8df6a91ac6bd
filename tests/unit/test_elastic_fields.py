"""search_fields: the bounded, typed entries Elasticsearch indexes for a document (pure)."""

from __future__ import annotations

import bisect
import itertools
import random
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.storage.elastic import fields
from tessera.storage.elastic.fields import (
    KEYWORD_BYTES,
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_LITERAL_BYTES,
    MAX_PATH_BYTES,
    SEARCH_FIELD,
    SEARCH_MAPPINGS,
    SEP,
    SORT_FIELD,
    TRUNCATED,
    keyword_cut,
    number_code,
    number_key,
    search_fields,
    text_hash,
)


def terms(document: dict[str, Any]) -> list[str]:
    found: list[str] = search_fields(document)[SEARCH_FIELD]
    return found


def by_path(document: dict[str, Any]) -> dict[str, list[str]]:
    """The terms of each path, without the path."""
    out: dict[str, list[str]] = {}
    for term in terms(document):
        path, _, rest = term.partition(SEP)
        out.setdefault(path, []).append(rest)
    return out


def code(value: int | float) -> str:
    key = number_key(value)
    assert key is not None
    return number_code(key)


def test_one_term_per_present_path_and_one_per_list_element() -> None:
    fields = search_fields({"traits": {"age": 30, "tags": ["a", 1, True]}, "gone": None})
    assert fields[SEARCH_FIELD] == [
        "traits" + SEP + "~object",
        "gone" + SEP + "~null",
        "traits.age" + SEP + "n" + code(30),
        "traits.tags" + SEP + "~list",
        "traits.tags" + SEP + "esa",
        "traits.tags" + SEP + "en" + code(1),
        "traits.tags" + SEP + "eb1",
    ]
    # One sort key per path holding a number or a string: the one thing sorting reads.
    assert fields[SORT_FIELD] == {"traits.age": "1" + code(30)}


def test_every_kind_has_its_own_tag() -> None:
    fields = by_path({"b": False, "i": -3, "f": 0.5, "s": "x", "l": [], "o": {}, "z": None})
    assert fields["b"] == ["b0"]
    assert fields["i"] == ["n" + code(-3)]
    assert fields["f"] == ["n" + code(0.5)]
    assert fields["s"] == ["sx"]
    assert fields["l"] == ["~list"]
    assert fields["o"] == ["~object"]
    assert fields["z"] == ["~null"]
    sort = search_fields({"s": "x", "i": 1, "b": True, "z": None, "l": ["y"]})[SORT_FIELD]
    assert sort == {"s": "2x", "i": "1" + code(1)}


def test_lists_are_never_entered() -> None:
    fields = by_path({"a": [{"b": 1}, [2], None, "x"]})
    assert list(fields) == ["a"]  # no "a.b": a field read never goes into a list
    assert fields["a"] == ["~list", "esx"]


def test_keys_no_condition_can_name_are_left_out() -> None:
    fields = by_path({"a.b": 1, "": 2, "é": 3, "ok-_9": {"x y": 4, "y": 5}})
    assert list(fields) == ["ok-_9", "ok-_9.y"]


def test_paths_go_sixteen_segments_deep_and_so_many_bytes_long() -> None:
    document: dict[str, Any] = {}
    node = document
    for depth in range(20):
        node[f"k{depth}"] = {"leaf": depth}
        node = node[f"k{depth}"]
    paths = list(by_path(document))
    assert max(path.count(".") + 1 for path in paths) == MAX_DEPTH
    assert ".".join(f"k{depth}" for depth in range(MAX_DEPTH)) in paths
    assert ".".join(f"k{depth}" for depth in range(MAX_DEPTH - 1)) + ".leaf" in paths
    longest = "k" * MAX_PATH_BYTES
    assert list(by_path({longest: 1, longest + "k": 2})) == [longest]


def test_past_the_entry_limit_a_document_is_cut_and_marked() -> None:
    document = {"first": 1, "wide": {f"k{n}": n for n in range(2 * MAX_ENTRIES)}, "last": 2}
    found = terms(document)
    assert len(found) == MAX_ENTRIES
    assert found[-1] == TRUNCATED
    # Breadth first: every top-level value made it, the deep ones ran out.
    assert [term.partition(SEP)[0] for term in found[:3]] == ["first", "wide", "last"]
    fitting = {f"k{n}": n for n in range(MAX_ENTRIES - 2)}
    assert TRUNCATED not in terms({"wide": fitting})
    assert len(terms({"wide": fitting})) == MAX_ENTRIES - 1
    # An entry is a value with all its terms: a string counts once.
    strings = {f"k{n}": "x" for n in range(MAX_ENTRIES - 2)}
    assert TRUNCATED not in terms({"wide": strings})


def test_numbers_beyond_what_json_holds() -> None:
    fields = by_path({"neg": -0.0, "nan": float("nan"), "inf": [float("inf"), 1], "huge": 10**400})
    assert fields["neg"] == ["n" + code(0.0)]  # not -0.0's bits: Python calls them equal
    assert fields["nan"] == ["~null"]
    assert fields["inf"] == ["~list", "en" + code(1)]
    assert fields["huge"] == ["~number"]
    assert number_key(2**63 - 1) == (2.0**63, -1)
    assert number_key(2**63) == (2.0**63, 0)  # beyond 64 bits: the nearest float
    assert number_key(2**53 + 1) == (2.0**53, 1)


NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(2**53 - 5, 2**53 + 5),
    st.integers(2**63 - 5, 2**63 + 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 2.0**53, 2.0**63, -(2.0**63)]),
)


def as_read(value: int | float) -> int | float:
    """The number as evaluate reads it: 64-bit integers exact, other integers as floats."""
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return float(value)
    return value


@settings(max_examples=500, deadline=None)
@given(a=NUMBERS, b=NUMBERS)
def test_number_keys_order_numbers_exactly(a: int | float, b: int | float) -> None:
    key_a, key_b = number_key(a), number_key(b)
    assert key_a is not None and key_b is not None
    assert (key_a < key_b) == (as_read(a) < as_read(b))
    assert (key_a == key_b) == (as_read(a) == as_read(b))
    # The codes Elasticsearch compares as text order them the same way, at a fixed width.
    code_a, code_b = number_code(key_a), number_code(key_b)
    assert (code_a < code_b) == (key_a < key_b)
    assert (code_a == code_b) == (key_a == key_b)
    assert len(code_a) == len(code_b) == 20


@settings(max_examples=500, deadline=None)
@given(a=st.text(), b=st.text())
def test_utf8_byte_order_is_code_point_order(a: str, b: str) -> None:
    # What keyword range queries and sorting compare (UTF-8 bytes) orders as Python's str does.
    assert (a.encode("utf-8", "surrogatepass") < b.encode("utf-8", "surrogatepass")) == (a < b)


def test_strings_are_read_up_to_the_first_nul() -> None:
    assert by_path({"s": "ab\x00cd"})["s"] == ["sab"]
    assert by_path({"s": ["\x00x"]})["s"][1] == "es"


def parts(found: list[str], tag: str) -> list[str]:
    return [term[len(tag) :] for term in found if term.startswith(tag)]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), length=st.integers(32_001, 90_000))
def test_long_strings_keep_a_head_a_hash_windows_and_a_tail(seed: int, length: int) -> None:
    # Random characters of 1 to 4 UTF-8 bytes: no window's text occurs twice, so each window's
    # place in the text is known.
    chooser = random.Random(seed)
    text = "".join(chooser.choices("aé€😀", weights=(4, 1, 1, 1), k=length))
    found = by_path({"s": text})["s"]
    [head] = parts(found, "s")
    assert text.startswith(head) and KEYWORD_BYTES - 4 < len(head.encode()) <= KEYWORD_BYTES
    assert keyword_cut(text) == (head, True)
    assert parts(found, "h") == [text_hash(text)]
    [reversed_tail] = parts(found, "z")
    tail = reversed_tail[::-1]
    assert text.endswith(tail) and KEYWORD_BYTES - 4 < len(tail.encode()) <= KEYWORD_BYTES
    windows = [head, *parts(found, "c")]
    assert all(len(window.encode()) <= KEYWORD_BYTES for window in windows)
    begins = [text.index(window) for window in windows]
    assert begins == sorted(begins) and begins[-1] + len(windows[-1]) == len(text)
    # Every substring of up to MAX_LITERAL_BYTES bytes lies whole in one window: the longest
    # one from each start lies in the last window beginning at or before it.
    offsets = list(itertools.accumulate((len(char.encode()) for char in text), initial=0))
    for start in range(len(text)):
        end = bisect.bisect_right(offsets, offsets[start] + MAX_LITERAL_BYTES) - 1
        window = bisect.bisect_right(begins, start) - 1
        assert end <= begins[window] + len(windows[window]), (start, end, window)


def test_an_element_keeps_only_what_equality_needs() -> None:
    long = "x" * (KEYWORD_BYTES + 10)
    assert by_path({"l": [long, "y"]})["l"] == ["~list", "eh" + text_hash(long), "esy"]


def test_every_term_fits_lucene_and_the_mapping_is_fixed() -> None:
    document = {"a": [1, "x", None, {"b": 2}], "c": {"d": 1.5, "e": True}, "s": "é" * 40_000}
    document["k" * MAX_PATH_BYTES] = "😀" * 40_000
    fields = search_fields(document)
    msgspec.json.encode(fields)
    # Lucene refuses a whole document with a term over 32766 bytes.
    assert max(len(term.encode()) for term in fields[SEARCH_FIELD]) <= 32766
    assert max(len(f"{k}.{v}".encode()) for k, v in fields[SORT_FIELD].items()) <= 32766
    assert set(fields) == set(SEARCH_MAPPINGS)
    assert SEARCH_MAPPINGS == {
        SEARCH_FIELD: {"type": "keyword", "doc_values": False},
        SORT_FIELD: {"type": "flattened", "index": False},
    }
    # ignore_above would make long strings silently unsearchable: never used.
    assert all("ignore_above" not in spec for spec in SEARCH_MAPPINGS.values())


# --- remembered objects (fields._SUBTREES) --------------------------------------------------

KEYS = st.sampled_from(["a", "b", "0", "c-d", "bad key"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from([1.0, 2**64]), st.text("ab1")
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)


def walked_afresh(document: dict[str, Any]) -> dict[str, Any]:
    """What the breadth-first walk alone gives, with nothing remembered."""
    fields._SUBTREES.clear()
    walked = fields._walk("", 0, document, frozenset(), defer_objects=False)
    return {SEARCH_FIELD: walked.terms, SORT_FIELD: walked.sort}


@settings(max_examples=300)
@given(documents=st.lists(st.dictionaries(KEYS, VALUES, max_size=4), min_size=1, max_size=4))
def test_remembered_objects_give_the_terms_of_a_fresh_walk(
    documents: list[dict[str, Any]],
) -> None:
    # Each document twice: once remembering its objects, once from what was remembered.
    for document in [*documents, *documents]:
        found = search_fields(document)
        expected = walked_afresh(msgspec.json.decode(msgspec.json.encode(document)))
        assert sorted(found[SEARCH_FIELD]) == sorted(expected[SEARCH_FIELD])
        assert found.get(SORT_FIELD, {}) == expected[SORT_FIELD]
        search_fields(document)  # remember it for the next round


def test_remembered_objects_tell_apart_what_conditions_tell_apart() -> None:
    spellings: list[Any] = [1, True, "1", None, [1], {"1": 1}]
    seen = [terms({"o": {"x": value}}) for value in spellings]
    assert seen == [terms({"o": {"x": value}}) for value in spellings]  # remembered, the same
    assert len({tuple(found) for found in seen}) == len(spellings)
    assert terms({"o": {"x": 1.0}}) == seen[0]  # 1 == 1.0, as in conditions
    assert terms({"o": {1: "a"}}) == ["o" + SEP + "~object"]  # an integer key is never a path
    assert terms({"o": {"1": "a"}}) == ["o" + SEP + "~object", "o.1" + SEP + "sa"]


def test_past_the_entry_limit_remembered_objects_keep_the_breadth_first_cut() -> None:
    wide = {f"k{n}": n for n in range(MAX_ENTRIES // 2)}
    document = {"first": dict(wide), "second": dict(wide), "third": {"deep": dict(wide)}}
    search_fields({"first": dict(wide)})  # remembered on its own
    found = terms(document)
    assert found == walked_afresh(document)[SEARCH_FIELD]
    assert found[-1] == TRUNCATED
