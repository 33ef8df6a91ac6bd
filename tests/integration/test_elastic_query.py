"""to_query on a real Elasticsearch answers as evaluate does; sorting and deep paging work.

Runs against the Elasticsearch of `scripts/services` (http://127.0.0.1:9200, or ELASTIC_TEST_URL):
each test module creates a throwaway index with SEARCH_MAPPINGS under a unique name and deletes
it afterwards. Skips, loudly, only when that Elasticsearch cannot be reached.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch
from elasticsearch.helpers import bulk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.errors import InvalidPayload
from tessera.query import QuerySyntaxError, evaluate, parse
from tessera.query.ast import (
    And,
    Between,
    Compare,
    Condition,
    Contains,
    EndsWith,
    Exists,
    Field,
    In,
    Literal,
    Not,
    Or,
    StartsWith,
    iter_fields,
)
from tessera.storage.elastic.fields import (
    KEYWORD_BYTES,
    MAX_LITERAL_BYTES,
    SEARCH_FIELDS,
    SEARCH_MAPPINGS,
    search_fields,
)
from tessera.storage.elastic.query import RESULT_WINDOW, search_page, to_query
from tessera.storage.search import Cursor, SearchRequest, SortKey
from tests.support.services import service_missing
from tests.unit.test_query_evaluate import PROFILE, ROWS
from tests.unit.test_query_sqlite import (
    CONDITIONS,
    DOCS,
    VARIANTS,
    _literals,
    document_at,
    neighbours,
)

URL = os.environ.get("ELASTIC_TEST_URL", "http://127.0.0.1:9200")
MAPPINGS = {
    "dynamic": False,
    "properties": {
        "batch": {"type": "keyword"},
        "id": {"type": "keyword"},
        "updated": {"type": "double"},
        **SEARCH_MAPPINGS,
    },
}
_batches = itertools.count()


@pytest.fixture(scope="module")
def es() -> Iterator[Elasticsearch]:
    client = Elasticsearch(URL, request_timeout=30)
    try:
        client.cluster.health(wait_for_status="yellow", timeout="10s")
    except Exception as error:  # noqa: BLE001 - any failure to reach it is a reason to skip
        client.close()
        reason = f"{type(error).__name__}: {error}"[:200]
        service_missing(
            f"Elasticsearch at {URL} cannot be reached ({reason}); run scripts/services up"
        )
    yield client
    client.close()


@pytest.fixture(scope="module")
def index(es: Elasticsearch) -> Iterator[str]:
    name = f"tessera-test-query-{uuid.uuid4().hex}"
    es.indices.create(
        index=name,
        mappings=MAPPINGS,
        settings={"number_of_shards": 2, "number_of_replicas": 0},
    )
    yield name
    es.indices.delete(index=name, ignore_unavailable=True)


def index_batch(es: Elasticsearch, index: str, docs: list[Any]) -> str:
    """Index the documents under a new batch name (their ids are their positions)."""
    batch = f"b{next(_batches)}"
    actions = [
        {
            "_index": index,
            "_id": f"{batch}-{n}",
            "_source": {"batch": batch, "id": str(n), **search_fields(doc)},
        }
        for n, doc in enumerate(docs)
    ]
    bulk(es, actions, refresh=True)
    return batch


def found(es: Elasticsearch, index: str, batch: str, condition: Condition) -> set[int]:
    """The positions of the batch's documents Elasticsearch finds for the condition."""
    query = {"bool": {"filter": [{"term": {"batch": batch}}, to_query(condition, "profile")]}}
    answer = es.search(index=index, query=query, size=1000, source={"includes": ["id"]})
    return {int(hit["_source"]["id"]) for hit in answer["hits"]["hits"]}


def es_matches(es: Elasticsearch, index: str, condition: Condition, docs: list[Any]) -> set[int]:
    return found(es, index, index_batch(es, index, docs), condition)


def python_matches(condition: Condition, docs: list[Any]) -> set[int]:
    decoded = [msgspec.json.decode(msgspec.json.encode(doc)) for doc in docs]
    return {n for n, doc in enumerate(decoded) if evaluate(condition, {"profile": doc})}


def assert_agree(es: Elasticsearch, index: str, condition: Condition, docs: list[Any]) -> None:
    assert es_matches(es, index, condition, docs) == python_matches(condition, docs), condition


# --- the semantics table ----------------------------------------------------------------------


def test_every_row_of_the_semantics_table(es: Elasticsearch, index: str) -> None:
    rows = [
        (text, expected) for text, expected in ROWS if text.count("@") == text.count("profile@")
    ]
    docs = [PROFILE, *VARIANTS]  # PROFILE comes first: position 0
    batch = index_batch(es, index, docs)
    for text, expected in rows:
        condition = parse(text)
        matches = found(es, index, batch, condition)
        assert (0 in matches) is expected, text
        assert matches == python_matches(condition, docs), text


def test_hand_built_conditions_agree(es: Elasticsearch, index: str) -> None:
    plan = Field("profile", ("traits", "plan"))
    tags = Field("profile", ("traits", "tags"))
    conditions: list[Condition] = [
        Compare("==", plan, Literal(None)),
        Compare("!=", plan, Literal(None)),
        Compare(">", plan, Literal(None)),
        Compare("<=", plan, Literal(False)),
        Between(plan, Literal(1), Literal("z")),
        In(plan, ()),
        Not(In(plan, ())),
        And(()),
        Or(()),
        Contains(tags, Literal(None)),
        StartsWith(plan, Literal(1)),
        EndsWith(plan, Literal(None)),
        Compare("==", plan, Literal("pro\x00")),
        Compare(">", plan, Literal("pro\x00")),
        Contains(plan, Literal("\x00")),
        Contains(plan, Literal("*")),
        StartsWith(plan, Literal("?")),
    ]
    batch = index_batch(es, index, VARIANTS)
    for condition in conditions:
        assert found(es, index, batch, condition) == python_matches(condition, VARIANTS), condition


# --- one rule at a time -----------------------------------------------------------------------


def ids(es: Elasticsearch, index: str, text: str, docs: list[Any]) -> set[int]:
    condition = parse(text)
    found = es_matches(es, index, condition, docs)
    assert found == python_matches(condition, docs), text
    return found


def test_missing_differs_from_null(es: Elasticsearch, index: str) -> None:
    docs: list[Any] = [{}, {"a": None}, {"a": 0}, {"a": {"b": None}}, {"a": []}]
    assert ids(es, index, "profile@a EXISTS", docs) == {1, 2, 3, 4}
    assert ids(es, index, "profile@a NOT EXISTS", docs) == {0}
    assert ids(es, index, "profile@a IS NULL", docs) == {0, 1}
    assert ids(es, index, "profile@a IS NOT NULL", docs) == {2, 3, 4}
    assert ids(es, index, "profile@a.b EXISTS", docs) == {3}
    assert ids(es, index, "profile@a.b IS NULL", docs) == {0, 1, 2, 3, 4}


def test_equality_needs_the_same_kind(es: Elasticsearch, index: str) -> None:
    docs: list[Any] = [{"a": 1}, {"a": 1.0}, {"a": True}, {"a": "1"}, {"a": [1]}, {"a": {"x": 1}}]
    assert ids(es, index, "profile@a == 1", docs) == {0, 1}
    assert ids(es, index, "profile@a == 1.0", docs) == {0, 1}
    assert ids(es, index, "profile@a == true", docs) == {2}
    assert ids(es, index, "profile@a == '1'", docs) == {3}
    assert ids(es, index, "profile@a IN (true, '1')", docs) == {2, 3}


def test_not_equal_is_present_and_not_null_and_not_equal(es: Elasticsearch, index: str) -> None:
    docs: list[Any] = [{}, {"a": None}, {"a": 1}, {"a": 2}, {"a": "1"}, {"a": [1]}, {"a": {}}]
    assert ids(es, index, "profile@a != 1", docs) == {3, 4, 5, 6}
    assert ids(es, index, "NOT profile@a == 1", docs) == {0, 1, 3, 4, 5, 6}


def test_lists_are_never_entered_by_field_reads(es: Elasticsearch, index: str) -> None:
    docs: list[Any] = [{"a": [{"b": 1}]}, {"a": {"b": 1}}, {"a": [1, 2]}]
    assert ids(es, index, "profile@a.b == 1", docs) == {1}
    assert ids(es, index, "profile@a.b EXISTS", docs) == {1}
    assert ids(es, index, "profile@a.0 EXISTS", docs) == set()
    assert ids(es, index, "profile@a == 1", docs) == set()


def test_contains_on_strings_and_on_lists(es: Elasticsearch, index: str) -> None:
    docs: list[Any] = [
        {"a": "hello"},
        {"a": ["hello", 2]},
        {"a": ["ell"]},
        {"a": [[1], {"x": 1}, None]},
        {"a": "a*b?c\\d"},
        {"a": ""},
    ]
    assert ids(es, index, "profile@a CONTAINS 'ell'", docs) == {0, 2}
    assert ids(es, index, "profile@a CONTAINS ''", docs) == {0, 4, 5}
    assert ids(es, index, "profile@a CONTAINS 2", docs) == {1}
    assert ids(es, index, "profile@a CONTAINS 2.0", docs) == {1}
    assert ids(es, index, "profile@a CONTAINS 'hello'", docs) == {0, 1}
    assert ids(es, index, "profile@a CONTAINS '*b?'", docs) == {4}
    assert ids(es, index, "profile@a CONTAINS '\\\\d'", docs) == {4}
    assert ids(es, index, "profile@a CONTAINS '?'", docs) == {4}


def test_prefixes_and_suffixes_of_strings_only(es: Elasticsearch, index: str) -> None:
    docs: list[Any] = [
        {"a": "éa😀x"},
        {"a": ["éa"]},
        {"a": "x😀"},
        {"a": 5},
        {"a": ""},
        {"a": "a*b?c\\d"},
    ]
    assert ids(es, index, "profile@a STARTS WITH 'éa'", docs) == {0}
    assert ids(es, index, "profile@a ENDS WITH '😀x'", docs) == {0}
    assert ids(es, index, "profile@a ENDS WITH 'x'", docs) == {0}
    assert ids(es, index, "profile@a STARTS WITH ''", docs) == {0, 2, 4, 5}
    assert ids(es, index, "profile@a ENDS WITH ''", docs) == {0, 2, 4, 5}
    assert ids(es, index, "profile@a ENDS WITH '😀'", docs) == {2}
    # ENDS WITH is a wildcard on the stored text: the literal's own * ? \\ are plain text.
    assert ids(es, index, "profile@a ENDS WITH '?c\\\\d'", docs) == {5}
    assert ids(es, index, "profile@a ENDS WITH '*'", docs) == set()
    assert ids(es, index, "profile@a ENDS WITH '?'", docs) == set()


def test_order_is_number_number_or_string_string(es: Elasticsearch, index: str) -> None:
    docs: list[Any] = [{"a": 5}, {"a": "5"}, {"a": True}, {"a": "\ue000"}, {"a": "😀"}, {"a": "z"}]
    assert ids(es, index, "profile@a > 4", docs) == {0}
    assert ids(es, index, "profile@a >= '5'", docs) == {1, 3, 4, 5}
    # Code point order: U+E000 sorts below U+1F600, though UTF-16 would put it above.
    assert ids(es, index, "profile@a > '\ue000'", docs) == {4}
    assert ids(es, index, "profile@a BETWEEN 'a' AND 'zz'", docs) == {5}


def test_big_integers_and_floats_compare_exactly(es: Elasticsearch, index: str) -> None:
    docs: list[Any] = [
        {"n": 2**53},
        {"n": 2**53 + 1},
        {"n": float(2**53)},
        {"n": 2**63 - 1},
        {"n": 2**63},
        {"n": 2**64 + 1},
        {"n": -0.0},
        {"n": 0},
    ]
    assert ids(es, index, "profile@n == 9007199254740992", docs) == {0, 2}
    assert ids(es, index, "profile@n > 9007199254740992", docs) == {1, 3, 4, 5}
    assert ids(es, index, "profile@n == 9223372036854775807", docs) == {3}
    assert ids(es, index, "profile@n > 9223372036854775807", docs) == {4, 5}
    assert ids(es, index, "profile@n == 1.8446744073709552e19", docs) == {5}
    assert ids(es, index, "profile@n >= 9007199254740993", docs) == {1, 3, 4, 5}
    assert ids(es, index, "profile@n <= 9007199254740992", docs) == {0, 2, 6, 7}
    assert ids(es, index, "profile@n < 9.223372036854775808e18", docs) == {0, 1, 2, 3, 6, 7}
    assert ids(es, index, "profile@n >= 9.223372036854775808e18", docs) == {4, 5}
    assert ids(es, index, "profile@n == 0", docs) == {6, 7}
    assert ids(es, index, "profile@n <= -0.0", docs) == {6, 7}


def test_strings_are_read_up_to_the_first_nul(es: Elasticsearch, index: str) -> None:
    docs: list[Any] = [{"s": "pro\x00x"}, {"s": "pro"}, {"s": ["pro\x00y"]}]
    assert ids(es, index, "profile@s == 'pro'", docs) == {0, 1}
    assert ids(es, index, "profile@s ENDS WITH 'ro'", docs) == {0, 1}
    assert ids(es, index, "profile@s CONTAINS 'x'", docs) == set()
    assert ids(es, index, "profile@s CONTAINS 'pro'", docs) == {0, 1, 2}


def test_long_strings_stay_exact(es: Elasticsearch, index: str) -> None:
    # Longer than one keyword: the head, windows, hash and reversed tail take over.
    body = "é" * KEYWORD_BYTES
    docs: list[Any] = [
        {"s": body + "needle" + body},
        {"s": body + "end"},
        {"s": body},
        {"s": body + "x"},
        {"s": [body + "x"]},
    ]
    field = Field("profile", ("s",))
    conditions: list[Condition] = [
        Contains(field, Literal("needle")),
        Contains(field, Literal("é" * 100 + "needle")),
        EndsWith(field, Literal("end")),
        StartsWith(field, Literal("éé")),
        Compare("==", field, Literal(body)),
        Compare("==", field, Literal(body + "x")),
        Compare("!=", field, Literal(body + "x")),
        In(field, (Literal(body + "x"), Literal(body))),
        Compare(">", field, Literal("é" * 100)),
        # The kept head of `body + "x"` ends with é; the text does not.
        EndsWith(field, Literal("é")),
        EndsWith(field, Literal("x")),
    ]
    for condition in conditions:
        assert_agree(es, index, condition, docs)
    assert es_matches(es, index, conditions[0], docs) == {0}
    assert es_matches(es, index, conditions[5], docs) == {3}


def test_what_cannot_be_answered_exactly_is_refused() -> None:
    field = Field("profile", ("s",))
    long = "x" * (MAX_LITERAL_BYTES + 1)
    refused: list[Condition] = [
        Compare("<", field, Literal(long)),
        StartsWith(field, Literal(long)),
        EndsWith(field, Literal(long)),
        Contains(field, Literal(long)),
        Compare("==", field, Literal(2**63)),
        Compare("==", field, Literal(float("inf"))),
        Compare("==", field, Literal("\ud800")),
        Exists(Field("profile", ("a.b",))),
        Exists(Field("profile", ())),
    ]
    for condition in refused:
        with pytest.raises(QuerySyntaxError):
            to_query(condition, "profile")
    to_query(Compare("==", field, Literal(long)), "profile")  # equality is exact at any length
    with pytest.raises(QuerySyntaxError, match="cannot be used when searching"):
        to_query(parse("event@type == 'x'"), "profile")
    with pytest.raises(ValueError, match="unknown entity"):
        to_query(parse("profile@a EXISTS"), "profiles")
    assert to_query(None) == {"match_all": {}}


# --- property: random documents, random conditions ----------------------------------------------


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(condition=CONDITIONS, docs=st.lists(DOCS, min_size=1, max_size=6))
def test_elasticsearch_and_evaluate_agree_on_random_documents(
    es: Elasticsearch, index: str, condition: Condition, docs: list[dict[str, Any]]
) -> None:
    # As in test_query_sqlite: add documents holding each literal, and values close to it, at
    # each path of the condition, alone and in a list, so predicates are often narrowly decided.
    near = {
        (type(value), repr(value)): value
        for node in _literals(condition)
        for literal in node
        for value in neighbours(literal.value)
    }
    for field in iter_fields(condition):
        for value in [*near.values(), *([value] for value in near.values()), list(near.values())]:
            docs.append(document_at(field.path, value))
    assert_agree(es, index, condition, docs)


# --- order and pages ----------------------------------------------------------------------------

RANKED: list[Any] = [3, "b", None, 1.5, "a", 2**53 + 1, 2**53, True, [1], {"x": 1}, "😀", -1]


@pytest.fixture(scope="module")
def ranked_index(es: Elasticsearch) -> Iterator[str]:
    name = f"tessera-test-sort-{uuid.uuid4().hex}"
    es.indices.create(index=name, mappings=MAPPINGS, settings={"number_of_replicas": 0})
    docs: list[dict[str, Any]] = [{"traits": {"rank": value}} for value in RANKED]
    docs += [{"traits": {}}, {"traits": {"rank": 3}}]
    actions = [
        {
            "_index": name,
            "_id": f"p{n:02d}",
            "_source": {"id": f"p{n:02d}", "updated": float(n), **search_fields(doc)},
        }
        for n, doc in enumerate(docs)
    ]
    bulk(es, actions, refresh=True)
    yield name
    es.indices.delete(index=name, ignore_unavailable=True)


def expected_order(descending: bool) -> list[str]:
    values: list[Any] = [*RANKED, "missing", 3]

    def key(n: int) -> tuple[Any, ...]:
        value = values[n] if n != len(RANKED) else None
        record = f"p{n:02d}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (1, value, "", record)
        if isinstance(value, str):
            return (2, 0, value, record)
        return (0, 0, "", record)

    return sorted((f"p{n:02d}" for n in range(len(values))), key=lambda r: key(int(r[1:])))[
        :: -1 if descending else 1
    ]


@pytest.mark.parametrize("descending", [False, True])
async def test_sorting_by_a_field(ranked_index: str, descending: bool) -> None:
    async with AsyncElasticsearch(URL) as client:
        request = SearchRequest(None, limit=100, sort=SortKey(("traits", "rank"), descending))
        page = await search_page(
            client,
            ranked_index,
            request,
            query=to_query(None),
            moment_field="updated",
            id_field="id",
        )
    assert [hit["_source"]["id"] for hit in page.items] == expected_order(descending)
    assert page.total == len(RANKED) + 2
    assert page.next_cursor is None  # cursors follow the default order only
    assert all(not set(SEARCH_FIELDS) & set(hit["_source"]) for hit in page.items)


async def test_sorted_pages_with_offset_and_a_condition(ranked_index: str) -> None:
    condition = parse("profile@traits.rank >= 1.5")
    request = SearchRequest(condition, limit=2, offset=1, sort=SortKey(("traits", "rank"), False))
    async with AsyncElasticsearch(URL) as client:
        page = await search_page(
            client,
            ranked_index,
            request,
            query=to_query(condition, "profile"),
            moment_field="updated",
            id_field="id",
        )
    # 1.5, 3 (p00), 3 (p13), 2**53, 2**53 + 1: skip one, take two.
    assert [hit["_source"]["id"] for hit in page.items] == ["p00", "p13"]
    assert page.total == 5


async def test_a_cursor_with_a_sort_is_refused(ranked_index: str) -> None:
    request = SearchRequest(None, limit=2, sort=SortKey(("a",), False), cursor=Cursor(1.0, "x"))
    async with AsyncElasticsearch(URL) as client:
        with pytest.raises(InvalidPayload):
            await search_page(
                client,
                ranked_index,
                request,
                query=to_query(None),
                moment_field="updated",
                id_field="id",
            )


MANY = RESULT_WINDOW + 50


@pytest.fixture(scope="module")
def many_index(es: Elasticsearch) -> Iterator[str]:
    name = f"tessera-test-deep-{uuid.uuid4().hex}"
    es.indices.create(
        index=name,
        mappings=MAPPINGS,
        settings={"number_of_shards": 2, "number_of_replicas": 0, "refresh_interval": -1},
    )
    actions = (
        {
            "_index": name,
            "_id": f"r{n:05d}",
            # Moments repeat (seven records each) so that the id has to break ties.
            "_source": {
                "id": f"r{n:05d}",
                "updated": float(n // 7),
                **search_fields({"traits": {"n": n % 3}}),
            },
        }
        for n in range(MANY)
    )
    bulk(es, actions, chunk_size=5000, refresh=True)
    yield name
    es.indices.delete(index=name, ignore_unavailable=True)


def newest_first(records: range) -> list[str]:
    return [f"r{n:05d}" for n in sorted(records, key=lambda n: (n // 7, n), reverse=True)]


async def test_cursor_pages_go_past_ten_thousand_hits(many_index: str) -> None:
    seen: list[str] = []
    cursor = None
    async with AsyncElasticsearch(URL) as client:
        for _ in range(5):
            request = SearchRequest(None, limit=4000, cursor=cursor)
            page = await search_page(
                client,
                many_index,
                request,
                query=to_query(None),
                moment_field="updated",
                id_field="id",
            )
            assert page.total == MANY
            seen += [hit["_source"]["id"] for hit in page.items]
            if page.next_cursor is None:
                break
            cursor = Cursor.decode(page.next_cursor)
    assert seen == newest_first(range(MANY))


async def test_offsets_beyond_the_window_are_walked(many_index: str) -> None:
    order = newest_first(range(MANY))
    condition = parse("profile@traits.n == 1")
    matching = [record for record in order if int(record[1:]) % 3 == 1]
    async with AsyncElasticsearch(URL) as client:

        async def page(request: SearchRequest, query: dict[str, Any]) -> list[str]:
            found = await search_page(
                client, many_index, request, query=query, moment_field="updated", id_field="id"
            )
            return [hit["_source"]["id"] for hit in found.items]

        everything = to_query(None)
        assert (
            await page(SearchRequest(None, limit=30, offset=10_010), everything)
            == order[10_010:10_040]
        )
        # Past the last hit: an empty page, still the right total.
        late = await search_page(
            client,
            many_index,
            SearchRequest(None, limit=10, offset=MANY + 5),
            query=everything,
            moment_field="updated",
            id_field="id",
        )
        assert late.items == [] and late.total == MANY
        # A cursor and an offset together: skip after the cursor.
        cursor = Cursor(moment=float(int(order[99][1:]) // 7), id=order[99])
        request = SearchRequest(None, limit=5, offset=10_000, cursor=cursor)
        assert await page(request, everything) == order[10_100:10_105]
        # A sort on a field, deep: numbers 0, 1, 2 by id within each.
        by_n = sorted(range(MANY), key=lambda n: (n % 3, n))
        request = SearchRequest(None, limit=3, offset=10_020, sort=SortKey(("traits", "n"), False))
        assert await page(request, everything) == [f"r{n:05d}" for n in by_n[10_020:10_023]]
        query = to_query(condition, "profile")
        request = SearchRequest(condition, limit=10, offset=3000)
        assert await page(request, query) == matching[3000:3010]


def test_the_window_is_a_real_wall_without_search_after(es: Elasticsearch, many_index: str) -> None:
    # What search_page avoids: from + size beyond the window is refused by Elasticsearch.
    from elasticsearch import BadRequestError

    with pytest.raises(BadRequestError):
        es.search(index=many_index, from_=RESULT_WINDOW, size=10)
