"""search_fields: the bounded, typed entries Elasticsearch indexes for a document (pure)."""

from __future__ import annotations

import bisect
import itertools
import random
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.storage.elastic.fields import (
    KEYWORD_BYTES,
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_LITERAL_BYTES,
    SEARCH_MAPPING,
    TRUNCATED,
    keyword_cut,
    number_key,
    search_fields,
    text_hash,
)


def by_path(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in search_fields(document):
        out.setdefault(entry["p"], []).append(entry)
    return out


def test_one_entry_per_present_path_and_one_per_list_element() -> None:
    entries = search_fields({"traits": {"age": 30, "tags": ["a", 1, True]}, "gone": None})
    assert entries == [
        {"p": "traits", "k": "object"},
        {"p": "gone", "k": "null"},
        {"p": "traits.age", "k": "number", "n": 30.0, "r": 0},
        {"p": "traits.tags", "k": "list"},
        {"p": "traits.tags", "k": "element", "s": "a"},
        {"p": "traits.tags", "k": "element", "n": 1.0, "r": 0},
        {"p": "traits.tags", "k": "element", "b": True},
    ]


def test_every_kind_has_its_own_value_field() -> None:
    fields = by_path({"b": False, "i": -3, "f": 0.5, "s": "x", "l": [], "o": {}, "z": None})
    assert fields["b"] == [{"p": "b", "k": "bool", "b": False}]
    assert fields["i"] == [{"p": "i", "k": "number", "n": -3.0, "r": 0}]
    assert fields["f"] == [{"p": "f", "k": "number", "n": 0.5, "r": 0}]
    assert fields["s"] == [{"p": "s", "k": "string", "s": "x", "z": "x"}]
    assert fields["l"] == [{"p": "l", "k": "list"}]
    assert fields["o"] == [{"p": "o", "k": "object"}]
    assert fields["z"] == [{"p": "z", "k": "null"}]


def test_lists_are_never_entered() -> None:
    fields = by_path({"a": [{"b": 1}, [2], None, "x"]})
    assert list(fields) == ["a"]  # no "a.b": a field read never goes into a list
    assert fields["a"] == [{"p": "a", "k": "list"}, {"p": "a", "k": "element", "s": "x"}]


def test_keys_no_condition_can_name_are_left_out() -> None:
    fields = by_path({"a.b": 1, "": 2, "é": 3, "ok-_9": {"x y": 4, "y": 5}})
    assert list(fields) == ["ok-_9", "ok-_9.y"]


def test_paths_go_sixteen_segments_deep() -> None:
    document: dict[str, Any] = {}
    node = document
    for depth in range(20):
        node[f"k{depth}"] = {"leaf": depth}
        node = node[f"k{depth}"]
    paths = [entry["p"] for entry in search_fields(document)]
    assert max(path.count(".") + 1 for path in paths) == MAX_DEPTH
    assert ".".join(f"k{depth}" for depth in range(MAX_DEPTH)) in paths
    assert ".".join(f"k{depth}" for depth in range(MAX_DEPTH - 1)) + ".leaf" in paths


def test_past_the_entry_limit_a_document_is_cut_and_marked() -> None:
    document = {"first": 1, "wide": {f"k{n}": n for n in range(2 * MAX_ENTRIES)}, "last": 2}
    entries = search_fields(document)
    assert len(entries) == MAX_ENTRIES
    assert entries[-1] == TRUNCATED
    # Breadth first: every top-level value made it, the deep ones ran out.
    assert [entry["p"] for entry in entries[:3]] == ["first", "wide", "last"]
    fitting = {f"k{n}": n for n in range(MAX_ENTRIES - 2)}
    assert TRUNCATED not in search_fields({"wide": fitting})
    assert len(search_fields({"wide": fitting})) == MAX_ENTRIES - 1


def test_numbers_beyond_what_json_holds() -> None:
    fields = by_path({"neg": -0.0, "nan": float("nan"), "inf": [float("inf"), 1], "huge": 10**400})
    assert fields["neg"] == [{"p": "neg", "k": "number", "n": 0.0, "r": 0}]
    assert str(fields["neg"][0]["n"]) == "0.0"  # not -0.0: Lucene orders the two apart
    assert fields["nan"] == [{"p": "nan", "k": "null"}]
    assert fields["inf"][1:] == [{"p": "inf", "k": "element", "n": 1.0, "r": 0}]
    assert fields["huge"] == [{"p": "huge", "k": "number"}]
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


@settings(max_examples=500, deadline=None)
@given(a=st.text(), b=st.text())
def test_utf8_byte_order_is_code_point_order(a: str, b: str) -> None:
    # What keyword range queries and sorting compare (UTF-8 bytes) orders as Python's str does.
    assert (a.encode("utf-8", "surrogatepass") < b.encode("utf-8", "surrogatepass")) == (a < b)


def test_strings_are_read_up_to_the_first_nul() -> None:
    assert by_path({"s": "ab\x00cd"})["s"] == [{"p": "s", "k": "string", "s": "ab", "z": "ba"}]
    assert by_path({"s": ["\x00x"]})["s"][1] == {"p": "s", "k": "element", "s": ""}


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), length=st.integers(32_001, 90_000))
def test_long_strings_keep_a_head_a_hash_windows_and_a_tail(seed: int, length: int) -> None:
    # Random characters of 1 to 4 UTF-8 bytes: no window's text occurs twice, so each window's
    # place in the text is known.
    chooser = random.Random(seed)
    text = "".join(chooser.choices("aé€😀", weights=(4, 1, 1, 1), k=length))
    [entry] = search_fields({"s": text})
    head = entry["s"]
    assert text.startswith(head) and KEYWORD_BYTES - 4 < len(head.encode()) <= KEYWORD_BYTES
    assert keyword_cut(text) == (head, True)
    assert entry["h"] == text_hash(text)
    tail = entry["z"][::-1]
    assert text.endswith(tail) and KEYWORD_BYTES - 4 < len(tail.encode()) <= KEYWORD_BYTES
    windows = [head, *entry["c"]]
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
    element = by_path({"l": [long]})["l"][1]
    assert set(element) == {"p", "k", "s", "h"}
    assert element["h"] == text_hash(long)


def test_entries_are_json_and_the_mapping_is_fixed() -> None:
    document = {"a": [1, "x", None, {"b": 2}], "c": {"d": 1.5, "e": True}, "s": "x" * 40_000}
    msgspec.json.encode(search_fields(document))
    assert SEARCH_MAPPING["type"] == "nested"
    properties = SEARCH_MAPPING["properties"]
    assert {name: spec["type"] for name, spec in properties.items()} == {
        "p": "keyword",
        "k": "keyword",
        "b": "boolean",
        "n": "double",
        "r": "long",
        "s": "keyword",
        "h": "keyword",
        "c": "keyword",
        "z": "keyword",
    }
    # ignore_above would make long strings silently unsearchable: never used.
    assert all("ignore_above" not in spec for spec in properties.values())
    every_part = {key for entry in search_fields(document) for key in entry}
    assert every_part <= set(properties)
