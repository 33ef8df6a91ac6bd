"""Typed paths (typed_paths.py) answer conditions and sorts exactly, in both stored forms.

An event's type, session id or client address is read from its keyword field when the document
holds it there alone (the typed form), and from the search terms otherwise: a null, a string
holding U+0000, one longer than TYPED_MAX_CHARS, or any document stored before typed paths
(every path in the terms, the old form). Random documents in both forms, with the values the
model allows at those paths (strings of every awkward kind, null, missing), are indexed into a
real Elasticsearch with the fields mapped as the event mapping maps them, and every random
condition must select exactly what `evaluate` selects.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch
from elasticsearch.helpers import bulk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.query import evaluate, parse
from tessera.query.ast import (
    Condition,
    Field,
    Literal,
    iter_fields,
)
from tessera.storage.elastic.fields import SEARCH_FIELD, SEARCH_MAPPINGS, SEP, search_fields
from tessera.storage.elastic.mappings import KEYWORD
from tessera.storage.elastic.mappings import MAPPINGS as MAPPINGS_BY_KIND
from tessera.storage.elastic.query import search_page, to_query
from tessera.storage.elastic.typed_paths import TYPED_KEYWORD_PATHS, TYPED_MAX_CHARS, typed_paths
from tessera.storage.search import SearchRequest, SortKey
from tests.integration.test_elastic_query import URL, es
from tests.unit.test_query_sqlite import (
    INTS,
    TEXT,
    _literals,
    conditions_over,
    document_at,
    neighbours,
)

__all__ = ["es"]  # the module's Elasticsearch client fixture, shared

EVENT_TYPED = typed_paths("event")
MAPPINGS = {
    "dynamic": False,
    "properties": {
        "batch": KEYWORD,
        "pos": KEYWORD,
        "updated": {"type": "double"},
        "type": KEYWORD,
        "session": {"properties": {"id": KEYWORD}},
        "metadata": {"properties": {"ip": KEYWORD}},
        **SEARCH_MAPPINGS,
    },
}
_batches = itertools.count()

LONG_TEXTS = st.sampled_from(
    ["x" * (TYPED_MAX_CHARS + 1), "é" * TYPED_MAX_CHARS, "😀" * TYPED_MAX_CHARS, "ab" * 4200]
)
# What the model allows at these paths: a string (of any kind) or null.
TYPED_VALUES = st.one_of(st.none(), TEXT, LONG_TEXTS, st.sampled_from(["a", "b", "ab", "a*?\\"]))
DOCS = st.fixed_dictionaries(
    {},
    optional={
        "type": TYPED_VALUES,
        "session": st.none() | st.fixed_dictionaries({}, optional={"id": TYPED_VALUES}),
        "metadata": st.fixed_dictionaries({}, optional={"ip": TYPED_VALUES}),
    },
)
PATHS = [("type",), ("session", "id"), ("session",), ("metadata", "ip")]
FIELDS = st.sampled_from(PATHS).map(lambda path: Field("event", path))
LITERALS = st.one_of(st.none(), st.booleans(), INTS, TEXT, st.sampled_from(["a", "ab", ""])).map(
    Literal
)


CONDITIONS = conditions_over(FIELDS, LITERALS, max_leaves=5)


@pytest.fixture(scope="module")
def index(es: Elasticsearch) -> Iterator[str]:
    name = f"tessera-test-typed-{uuid.uuid4().hex}"
    es.indices.create(
        index=name, mappings=MAPPINGS, settings={"number_of_shards": 2, "number_of_replicas": 0}
    )
    yield name
    es.indices.delete(index=name, ignore_unavailable=True)


def stored(doc: dict[str, Any], *, old_form: bool) -> dict[str, Any]:
    """The document as the writer stores it now (typed paths in their fields alone) or as it
    stored it before typed paths (every path in the search terms too)."""
    return {**doc, **search_fields(doc, frozenset() if old_form else EVENT_TYPED)}


def index_batch(es: Elasticsearch, index: str, docs: list[Any], *, old_form: bool) -> str:
    batch = f"b{next(_batches)}"
    actions = [
        {
            "_index": index,
            "_id": f"{batch}-{n}",
            "_source": {"batch": batch, "pos": str(n), **stored(doc, old_form=old_form)},
        }
        for n, doc in enumerate(docs)
    ]
    bulk(es, actions, refresh=True)
    return batch


def es_matches(
    es: Elasticsearch, index: str, condition: Condition, docs: list[Any], *, old_form: bool
) -> set[int]:
    batch = index_batch(es, index, docs, old_form=old_form)
    query = {"bool": {"filter": [{"term": {"batch": batch}}, to_query(condition, "event")]}}
    answer = es.search(index=index, query=query, size=1000, source={"includes": ["pos"]})
    return {int(hit["_source"]["pos"]) for hit in answer["hits"]["hits"]}


def python_matches(condition: Condition, docs: list[Any]) -> set[int]:
    decoded = [msgspec.json.decode(msgspec.json.encode(doc)) for doc in docs]
    return {n for n, doc in enumerate(decoded) if evaluate(condition, {"event": doc})}


def with_literals_at_paths(condition: Condition, docs: list[dict[str, Any]]) -> None:
    """Add documents holding each string literal of the condition, and its near misses, at
    each path of the condition, so predicates are often narrowly decided."""
    near = {
        repr(value): value
        for node in _literals(condition)
        for literal in node
        for value in neighbours(literal.value)
        if value is None or isinstance(value, str)
    }
    for field in iter_fields(condition):
        if field.path == ("session",):
            continue
        for value in near.values():
            docs.append(document_at(field.path, value))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(condition=CONDITIONS, docs=st.lists(DOCS, min_size=1, max_size=6))
def test_typed_paths_answer_as_evaluate_does_in_both_forms(
    es: Elasticsearch, index: str, condition: Condition, docs: list[dict[str, Any]]
) -> None:
    with_literals_at_paths(condition, docs)
    expected = python_matches(condition, docs)
    assert es_matches(es, index, condition, docs, old_form=False) == expected, condition
    assert es_matches(es, index, condition, docs, old_form=True) == expected, condition


def test_a_typed_value_has_no_terms_and_the_rest_keep_theirs() -> None:
    doc = {
        "type": "purchase",
        "session": {"id": "s-1"},
        "metadata": {"ip": None},
        "properties": {"sku": "a"},
    }
    terms = search_fields(doc, EVENT_TYPED)[SEARCH_FIELD]
    paths = {term.partition(SEP)[0] for term in terms}
    assert "type" not in paths and "session.id" not in paths
    assert {"metadata.ip", "properties.sku", "session"} <= paths  # null, free-form, the object
    for awkward in ["a\x00b", "x" * (TYPED_MAX_CHARS + 1), 5]:
        terms = search_fields({"type": awkward}, EVENT_TYPED)[SEARCH_FIELD]
        assert any(term.startswith("type" + SEP) for term in terms), awkward


def test_the_typed_and_the_old_form_are_found_together(es: Elasticsearch, index: str) -> None:
    docs = [{"type": "purchase"}, {"type": "purchase"}, {"type": "view"}, {"type": None}]
    new = index_batch(es, index, docs, old_form=False)
    old = index_batch(es, index, docs, old_form=True)
    for text, expected in [
        ("event@type == 'purchase'", {(new, "0"), (new, "1"), (old, "0"), (old, "1")}),
        ("event@type != 'purchase'", {(new, "2"), (old, "2")}),
        ("event@type IS NULL", {(new, "3"), (old, "3")}),
    ]:
        query = {
            "bool": {"filter": [{"terms": {"batch": [new, old]}}, to_query(parse(text), "event")]}
        }
        answer = es.search(
            index=index, query=query, size=100, source={"includes": ["batch", "pos"]}
        )
        hits = {(hit["_source"]["batch"], hit["_source"]["pos"]) for hit in answer["hits"]["hits"]}
        assert hits == expected, text


SORTED_VALUES: list[Any] = ["b", "a", None, "missing", "é", "😀", "x" * (TYPED_MAX_CHARS + 1), "a"]


@pytest.mark.parametrize("descending", [False, True])
async def test_sorting_by_a_typed_path(es: Elasticsearch, descending: bool) -> None:
    name = f"tessera-test-typed-sort-{uuid.uuid4().hex}"
    es.indices.create(index=name, mappings=MAPPINGS, settings={"number_of_replicas": 0})
    try:
        actions = []
        for n, value in enumerate(SORTED_VALUES):
            doc = {} if value == "missing" else {"type": value}
            actions.append(
                {
                    "_index": name,
                    "_id": f"e{n}",
                    # Alternate forms: the order must not depend on when a record was stored.
                    "_source": {"pos": f"e{n}", **stored(doc, old_form=n % 2 == 1)},
                }
            )
        bulk(es, actions, refresh=True)
        request = SearchRequest(None, limit=20, sort=SortKey(("type",), descending, entity="event"))
        async with AsyncElasticsearch(URL) as client:
            page = await search_page(
                client, name, request, query=to_query(None), moment_field="updated", id_field="pos"
            )
    finally:
        es.indices.delete(index=name, ignore_unavailable=True)

    def key(n: int) -> tuple[int, str, str]:
        value = SORTED_VALUES[n]
        if value is None or value == "missing":
            return (0, "", f"e{n}")
        return (1, value, f"e{n}")

    expected = sorted(range(len(SORTED_VALUES)), key=key)
    if descending:
        expected.reverse()
    assert [hit["_source"]["pos"] for hit in page.items] == [f"e{n}" for n in expected]


@pytest.mark.parametrize("kind", sorted(TYPED_KEYWORD_PATHS))
def test_every_typed_path_is_a_keyword_of_its_mapping(kind: str) -> None:
    for path in typed_paths(kind):
        node: dict[str, Any] = MAPPINGS_BY_KIND[kind]
        for segment in path.split("."):
            node = node["properties"][segment]
        assert node == KEYWORD, (kind, path)
        # The field keeps every value in typed form (ignore_above counts UTF-16 units).
        assert node["ignore_above"] >= TYPED_MAX_CHARS * 2
