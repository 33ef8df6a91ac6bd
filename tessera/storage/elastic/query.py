"""Translate a condition into the Elasticsearch query DSL, over the `sx` entries of fields.py.

    query = to_query(parse("profile@traits.plan == 'pro'"), entity="profile")
    page = await search_page(client, "tessera-profiles-*", request, query=query, ...)

The query answers exactly as `evaluate` does (see evaluate.py), document by document, for every
value within the bounds of fields.py (tests/integration/test_elastic_query.py checks this
against a real Elasticsearch on random documents and conditions). How:

- Each predicate is one `nested` query over `sx` that looks for the single entry of the field's
  path with the right kind and value: `p` the dotted path, `k` the kind (a value of another
  kind never matches, so `true` never meets `1` and `"5"` never meets `5`), then the value.
  Reading a field never enters a list, and list elements are entries of their own kind
  ("element"), so only CONTAINS sees them.
- Numbers compare as the pair (n, r) of fields.number_key, exactly: `v < x` is
  `n < xn OR (n == xn AND r < xr)`, `v == x` is `n == xn AND r == xr`.
- Strings compare as keywords, which is UTF-8 byte order, which is code point order.
  Equality of a literal longer than a keyword also checks the SHA-256 `h` of the whole text.
  STARTS WITH is a prefix query on `s`, ENDS WITH one on the reversed text `z`, CONTAINS a
  wildcard query `*...*` (with `*`, `?` and `\\` escaped) on `s` and the windows `c`.
- `!=` is "a non-null value is present" AND NOT `==`; IS NULL is NOT "a non-null value is
  present"; NOT is `must_not`, AND `filter`, OR `should`. Every clause is a filter on whole
  documents (a document matches it or not), so NOT, AND and OR are two-valued, as in Python.

Refused (QuerySyntaxError, as to_sqlite does): fields of another entity, bad paths, integers
beyond 64 bits, floats that are not finite, strings with an unpaired surrogate, and string
literals longer than fields.MAX_LITERAL_BYTES in ordering, CONTAINS, STARTS WITH or ENDS WITH
(the index keeps long strings in pieces of bounded size; beyond that length an answer would
only be approximate).

Order and paging (`sort_clause`, `search_page`):

- The default order is the moment (profiles: `updated`, events: `time`) newest first, then the
  record id: a total order, so `search_after` on [moment, id] is a keyset cursor, and a reader
  paging with next_cursor never meets Elasticsearch's 10,000-hit window (`from + size` is only
  used while it stays inside that window).
- A sort on a field orders, ascending: documents without a number or string there (missing,
  null, boolean, list or object) first, then numbers (exactly, as above), then strings (by code
  point, on their first KEYWORD_BYTES bytes), each group by record id; descending is the exact
  reverse. For missing fields, nulls, numbers and strings this is SQLite's order too (the
  embedded store sorts by json_extract, NULLs first); booleans and lists/objects differ (SQLite
  sorts booleans as 0/1 and lists/objects as their JSON text).
- An offset beyond the window is reached by walking `search_after` in steps of the window size
  inside a point in time (PIT): every step and the final page then see the same snapshot of
  the index, so no row is skipped or counted twice while writes go on. A single request is its
  own snapshot, so shallow pages need no PIT. The total is exact (`track_total_hits: true`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, AsyncElasticsearch

from tessera.errors import InvalidPayload, StorageUnavailable
from tessera.query.ast import (
    ENTITIES,
    MAX_PATH_SEGMENTS,
    SEGMENT,
    And,
    Between,
    Compare,
    Condition,
    Contains,
    EndsWith,
    Exists,
    Field,
    In,
    IsNull,
    Literal,
    Not,
    Or,
    Scalar,
    StartsWith,
    iter_fields,
)
from tessera.query.errors import QuerySyntaxError
from tessera.storage.elastic.fields import (
    KEYWORD_BYTES,
    MAX_LITERAL_BYTES,
    SEARCH_FIELD,
    keyword_cut,
    number_key,
    text_hash,
)
from tessera.storage.elastic.reads import complete_search, point_in_time
from tessera.storage.ports import SearchPage
from tessera.storage.search import Cursor, SearchRequest, SortKey, timed_out

Query = dict[str, Any]

MATCH_ALL: Final[Query] = {"match_all": {}}
MATCH_NONE: Final[Query] = {"match_none": {}}
# Elasticsearch's default index.max_result_window: `from + size` may not go beyond it.
RESULT_WINDOW: Final = 10_000
# The client waits this much longer than a search's own timeout before it gives up.
CLIENT_TIMEOUT_SLACK_S: Final = 1.0

_VALUE_KINDS: Final = ["bool", "number", "string", "list", "object"]
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RANGE = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
_STRICT = {">=": ">", "<=": "<", ">": ">", "<": "<"}
_WILDCARD_SPECIAL = frozenset("*?\\")


def to_query(condition: Condition | None, entity: str | None = None) -> Query:
    """The query selecting the documents (of `entity`, if given) for which the condition holds.

    Raises QuerySyntaxError for what the index cannot answer exactly (see the module) and for
    a field of another entity than `entity`; ValueError for an unknown entity.
    """
    if condition is None:
        return MATCH_ALL
    if entity is not None:
        if entity not in ENTITIES:
            raise ValueError(f"unknown entity {entity!r}")
        for field in iter_fields(condition):
            if field.entity != entity:
                raise QuerySyntaxError(
                    f"condition: field {field} cannot be used when searching {entity}s"
                )
    return {"bool": {"filter": [_condition(condition)]}}


def _condition(node: Condition) -> Query:
    if isinstance(node, And):
        items = [_condition(item) for item in node.items]
        return {"bool": {"filter": items}} if items else MATCH_ALL
    if isinstance(node, Or):
        items = [_condition(item) for item in node.items]
        return {"bool": {"should": items, "minimum_should_match": 1}} if items else MATCH_NONE
    if isinstance(node, Not):
        return _not(_condition(node.item))
    path = _path(node.field)
    if isinstance(node, Exists):
        present = _entry(path, [])
        return _not(present) if node.negated else present
    if isinstance(node, IsNull):
        valued = _valued(path)
        return valued if node.negated else _not(valued)
    if isinstance(node, Compare):
        if node.op == "==":
            return _entry(path, _equals(node.value, "direct"))
        if node.op == "!=":
            equal = _entry(path, _equals(node.value, "direct"))
            return {"bool": {"filter": [_valued(path)], "must_not": [equal]}}
        return _entry(path, _ordered(node.op, node.value))
    if isinstance(node, Between):
        low, high = _ordered(">=", node.low), _ordered("<=", node.high)
        return _entry(path, None if low is None or high is None else low + high)
    if isinstance(node, In):
        options = [_equals(literal, "direct") for literal in node.values]
        return _entry(path, _any(options))
    if isinstance(node, Contains):
        return _entry(path, _contains(node.value))
    if isinstance(node, StartsWith | EndsWith):
        return _entry(path, _affix(node.value, suffix=isinstance(node, EndsWith)))
    raise TypeError(f"not a condition: {node!r}")


# --- one entry ------------------------------------------------------------------------------

Clauses = list[Query]


def _entry(path: str, clauses: Clauses | None) -> Query:
    """Documents with an entry at `path` meeting every clause; None means "never"."""
    if clauses is None:
        return MATCH_NONE
    return {
        "nested": {
            "path": SEARCH_FIELD,
            "query": {"bool": {"filter": [_term("p", path), *clauses]}},
            "score_mode": "none",
        }
    }


def _valued(path: str) -> Query:
    """The field is present and not null."""
    return _entry(path, [{"terms": {f"{SEARCH_FIELD}.k": _VALUE_KINDS}}])


def _equals(literal: Literal, where: str) -> Clauses | None:
    """Clauses for "the value equals the literal", on a direct value or a list element."""
    value = _checked(literal)

    def kind(name: str) -> Query:
        return _term("k", "element" if where == "element" else name)

    if value is None:
        return None
    if isinstance(value, bool):
        return [kind("bool"), _term("b", value)]
    if isinstance(value, str):
        if "\x00" in value:
            return None  # a stored text ends before its first U+0000
        head, cut = keyword_cut(value)
        clauses = [kind("string"), _term("s", head)]
        if cut:
            clauses.append(_term("h", text_hash(value)))
        elif len(value.encode()) > KEYWORD_BYTES - 4:
            # As long as a cut-down stored text may be: it must not be one.
            clauses.append({"bool": {"must_not": [{"exists": {"field": _name("h")}}]}})
        return clauses
    n, r = _number(value)
    return [kind("number"), _term("n", n), _term("r", r)]


def _ordered(op: str, literal: Literal) -> Clauses | None:
    value = _checked(literal)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        _short(value, "compared")
        return [_term("k", "string"), {"range": {_name("s"): {_RANGE[op]: value}}}]
    n, r = _number(value)
    # (n, r) in lexicographic order: strictly beyond on n, or level on n and beyond on r.
    beyond = {"range": {_name("n"): {_RANGE[_STRICT[op]]: n}}}
    level = {"bool": {"filter": [_term("n", n), {"range": {_name("r"): {_RANGE[op]: r}}}]}}
    return [_term("k", "number"), {"bool": {"should": [beyond, level], "minimum_should_match": 1}}]


def _contains(literal: Literal) -> Clauses | None:
    value = _checked(literal)
    if value is None:
        return None
    member = _equals(literal, "element")
    options = [member] if member is not None else []
    if isinstance(value, str) and "\x00" not in value:
        _short(value, "searched for")
        inside: Clauses = [_term("k", "string")]
        if value:
            pattern = "*" + _escaped(value) + "*"
            windows = [{"wildcard": {_name(part): {"value": pattern}}} for part in ("s", "c")]
            inside.append({"bool": {"should": windows, "minimum_should_match": 1}})
        options.append(inside)
    return _any(options)


def _affix(literal: Literal, *, suffix: bool) -> Clauses | None:
    value = _checked(literal)
    if not isinstance(value, str) or "\x00" in value:
        return None
    _short(value, "matched")
    clauses = [_term("k", "string")]
    if value:
        field, wanted = ("z", value[::-1]) if suffix else ("s", value)
        clauses.append({"prefix": {_name(field): {"value": wanted}}})
    return clauses


def _any(options: Sequence[Clauses | None]) -> Clauses | None:
    """Clauses for "one of these sets of clauses holds" on the same entry."""
    alive = [option for option in options if option is not None]
    if not alive:
        return None
    if len(alive) == 1:
        return alive[0]
    should = [{"bool": {"filter": option}} for option in alive]
    return [{"bool": {"should": should, "minimum_should_match": 1}}]


def _not(query: Query) -> Query:
    return {"bool": {"must_not": [query]}}


def _term(part: str, value: Any) -> Query:
    return {"term": {_name(part): value}}


def _name(part: str) -> str:
    return f"{SEARCH_FIELD}.{part}"


def _escaped(text: str) -> str:
    return "".join("\\" + char if char in _WILDCARD_SPECIAL else char for char in text)


def _path(field: Field) -> str:
    if not 1 <= len(field.path) <= MAX_PATH_SEGMENTS:
        raise QuerySyntaxError(f"condition: field {field} needs 1 to 16 path segments")
    for segment in field.path:
        if not SEGMENT.fullmatch(segment):
            raise QuerySyntaxError(f"condition: bad path segment {segment!r} in {field}")
    return ".".join(field.path)


def _number(value: int | float) -> tuple[float, int]:
    key = number_key(value)
    if key is None:  # _checked lets no such literal through
        raise QuerySyntaxError(f"condition: number {value} is out of range")
    return key


def _short(value: str, what: str) -> None:
    if len(value.encode()) > MAX_LITERAL_BYTES:
        raise QuerySyntaxError(
            f"condition: a string longer than {MAX_LITERAL_BYTES} bytes cannot be {what} here"
        )


def _checked(literal: Literal) -> Scalar:
    value = literal.value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
        raise QuerySyntaxError(f"condition: integer {value} does not fit in 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise QuerySyntaxError(f"condition: number {value} is not finite")
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise QuerySyntaxError("condition: a string holds an unpaired surrogate") from None
    return value


# --- order and pages ------------------------------------------------------------------------


def sort_clause(sort: SortKey | None, *, moment_field: str, id_field: str) -> list[Query]:
    """The sort of a search: the default order, or a field's (see the module)."""
    if sort is None:
        return [{moment_field: {"order": "desc"}}, {id_field: {"order": "desc"}}]
    path = ".".join(sort.path)
    order = "desc" if sort.descending else "asc"

    def by(part: str, kinds: list[str], **extra: str) -> Query:
        at = {"bool": {"filter": [_term("p", path), {"terms": {_name("k"): kinds}}]}}
        nested = {"path": SEARCH_FIELD, "filter": at}
        return {_name(part): {"order": order, "nested": nested, **extra}}

    # "number" < "string" as keywords: the kind itself orders the two groups.
    group = by("k", ["number", "string"], missing="_last" if sort.descending else "_first")
    numbers, exact, strings = by("n", ["number"]), by("r", ["number"]), by("s", ["string"])
    return [group, numbers, exact, strings, {id_field: {"order": order}}]


def search_after(cursor: Cursor) -> list[Any]:
    """The `search_after` values of a cursor, for the default order."""
    return [cursor.moment, cursor.id]


def cursor_after(hit: Query) -> Cursor:
    """The cursor just past a hit of the default order (its sort values: moment, id)."""
    moment, record_id = hit["sort"][0], hit["sort"][1]
    return Cursor(moment=float(moment), id=str(record_id))


async def search_page(
    client: AsyncElasticsearch,
    index: str,
    request: SearchRequest,
    *,
    query: Query,
    moment_field: str,
    id_field: str,
    source: bool | Mapping[str, Any] | None = None,
) -> SearchPage[Query]:
    """One page of raw hits (`_source`, `sort`), the exact total and the next cursor.

    `query` is to_query's answer, combined by the caller with its own filters (the tenant).
    The moment field should be numeric (the cursor carries its sort value as a float).
    `source` is Elasticsearch's `_source` filter; by default the whole document but `sx`.
    Every shard must answer (reads.py): a page is never made of the shards that could.

    With the request's ``timeout_s`` (TESSERA_SEARCH_TIMEOUT_SECONDS), Elasticsearch is asked
    to stop the search then (its ``timeout``; with partial results refused it answers 504),
    the client gives up a second later, and either way the caller gets SearchTimedOut.
    """
    if request.timeout_s is None:
        return await _search_page(client, index, request, query, moment_field, id_field, source)
    timed = client.options(request_timeout=request.timeout_s + CLIENT_TIMEOUT_SLACK_S)
    try:
        return await _search_page(timed, index, request, query, moment_field, id_field, source)
    except StorageUnavailable as exc:
        if _timed_out(exc.__cause__):
            raise timed_out(request.timeout_s) from exc
        raise


def _timed_out(cause: BaseException | None) -> bool:
    if isinstance(cause, ConnectionTimeout):
        return True
    return isinstance(cause, ApiError) and cause.meta.status == 504


async def _search_page(
    client: AsyncElasticsearch,
    index: str,
    request: SearchRequest,
    query: Query,
    moment_field: str,
    id_field: str,
    source: bool | Mapping[str, Any] | None,
) -> SearchPage[Query]:
    if source is None:
        source = {"excludes": [SEARCH_FIELD]}
    timing: Query = {}
    if request.timeout_s is not None:
        timing["timeout"] = f"{max(1, round(request.timeout_s * 1000))}ms"
    if request.sort is not None and request.cursor is not None:
        raise InvalidPayload("cursor: pages with a cursor follow the default order only")
    sort = sort_clause(request.sort, moment_field=moment_field, id_field=id_field)
    after = search_after(request.cursor) if request.cursor is not None else None
    if request.offset + request.limit <= RESULT_WINDOW and (after is None or not request.offset):
        extra: Query = {"search_after": after} if after is not None else {}
        answer = await complete_search(
            client,
            f"searching {index}",
            index=index,
            query=query,
            sort=sort,
            from_=request.offset,
            size=request.limit,
            track_total_hits=True,
            source=source,
            **extra,
            **timing,
        )
        total, hits = answer["hits"]["total"]["value"], answer["hits"]["hits"]
    else:
        total, hits = await _deep_page(client, index, request, query, sort, after, source, timing)
    next_cursor = None
    if request.sort is None and hits and len(hits) == request.limit:
        next_cursor = cursor_after(hits[-1]).encode()
    return SearchPage(total=int(total), items=list(hits), next_cursor=next_cursor)


async def _deep_page(
    client: AsyncElasticsearch,
    index: str,
    request: SearchRequest,
    query: Query,
    sort: list[Query],
    after: list[Any] | None,
    source: bool | Mapping[str, Any],
    timing: Query,
) -> tuple[int, list[Query]]:
    """Skip `offset` hits by search_after steps inside one point in time, then read the page."""
    async with point_in_time(client, index, f"searching {index}") as pit:
        if pit is None:
            return 0, []  # nothing stored yet
        total: int | None = None
        remaining = request.offset
        while True:
            size = min(remaining, RESULT_WINDOW) if remaining else request.limit
            extra: Query = {"search_after": after} if after is not None else {}
            answer = await pit.search(
                query=query,
                sort=sort,
                size=size,
                track_total_hits=total is None,
                source=source if not remaining else False,
                **extra,
                **timing,
            )
            if total is None:
                total = int(answer["hits"]["total"]["value"])
            hits: list[Query] = answer["hits"]["hits"]
            if not remaining:
                return total, hits
            if len(hits) < size:
                return total, []  # the offset lies past the last hit
            remaining -= len(hits)
            # With a PIT, Elasticsearch appends its own tiebreaker to `sort`: keep all values.
            after = hits[-1]["sort"]


async def every_page(
    client: AsyncElasticsearch,
    index: str,
    query: Query,
    sort: list[Query],
    *,
    page_size: int,
    source: bool | Mapping[str, Any],
) -> AsyncIterator[list[Query]]:
    """Every hit of the query in `sort` order, `page_size` at a time (at most the result
    window), from one point in time: however many there are, none twice, none left out."""
    if not 1 <= page_size <= RESULT_WINDOW:
        raise ValueError(f"page_size must be 1 to {RESULT_WINDOW}, not {page_size}")
    async with point_in_time(client, index, f"reading every match in {index}") as pit:
        if pit is None:
            return  # nothing stored yet
        after: list[Any] | None = None
        while True:
            extra: Query = {"search_after": after} if after is not None else {}
            answer = await pit.search(
                query=query,
                sort=sort,
                size=page_size,
                track_total_hits=False,
                source=source,
                **extra,
            )
            hits: list[Query] = answer["hits"]["hits"]
            if hits:
                yield hits
            if len(hits) < page_size:
                return
            after = hits[-1]["sort"]
