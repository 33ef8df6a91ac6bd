"""Translate a condition into the Elasticsearch query DSL, over the search terms of fields.py.

    query = to_query(parse("profile@traits.plan == 'pro'"), entity="profile")
    page = await search_page(client, "tessera-profiles-*", request, query=query, ...)

The query answers exactly as `evaluate` does (see evaluate.py), document by document, for every
value within the bounds of fields.py (tests/integration/test_elastic_query.py checks this
against a real Elasticsearch on random documents and conditions). How:

- Each predicate is a term, terms, range, prefix or wildcard query on `sk`, whose terms are
  `path U+0001 tag value` (fields.py): the path and the tag fix the field and the kind of
  value (a value of another kind never matches, so `true` never meets `1` and `"5"` never
  meets `5`), the rest is the value. A path has one direct value per document, so clauses
  about it combine with AND; list elements have tags of their own (`e…`), so only CONTAINS
  sees them, and reading a field never enters a list.
- Numbers compare as the pair (n, r) of fields.number_key, exactly, through number_code,
  whose text order is the order of (n, r): `v < x` is a term range from `path\x01n` up to
  (not including) `path\x01n<code of x>`.
- Strings compare as keywords, which is UTF-8 byte order, which is code point order.
  Equality with a literal longer than a keyword is the SHA-256 `h` of the whole text.
  STARTS WITH is a prefix query on `s`; ENDS WITH a wildcard query `path\x01s*<literal>` on
  a text that fits a keyword (it has no `h`), or a prefix query on the reversed tail `z` of a
  longer one (and of any text stored before `z` was kept for long texts only); CONTAINS a
  wildcard query `path\x01s*...*` (with `*`, `?` and `\\` escaped) or the same on the
  windows `c`.
- A typed path (typed_paths.py: an event's id, type, source, session and profile ids …) is
  read from its keyword field where the document holds it there alone, and from the terms
  where it has them: each predicate becomes "(on the field AND the path has no term) OR (on
  the terms AND it has one)", so each document is asked in the one form it was stored in.
  The field holds only strings without U+0000, so the same literals match as on the terms.
- EXISTS is a prefix query on `path\x01` (every present value has a term); "a non-null value
  is present" is that AND NOT `path\x01~null`. `!=` is "a non-null value is present" AND NOT
  `==`; IS NULL is NOT "a non-null value is present"; NOT is `must_not`, AND `filter`, OR
  `should`. Every clause is a filter on whole documents (a document matches it or not), so
  NOT, AND and OR are two-valued, as in Python.

Refused (QuerySyntaxError, as to_sqlite does): fields of another entity, bad paths (also paths
longer than fields.MAX_PATH_BYTES, which the index does not hold), integers beyond 64 bits,
floats that are not finite, strings with an unpaired surrogate, and string literals longer
than fields.MAX_LITERAL_BYTES in ordering, CONTAINS, STARTS WITH or ENDS WITH (the index keeps
long strings in pieces of bounded size; beyond that length an answer would only be
approximate).

Order and paging (`sort_clause`, `search_page`):

- The default order is the moment (profiles: `updated`, events: `time`) newest first, then the
  record id: a total order, so `search_after` on [moment, id] is a keyset cursor, and a reader
  paging with next_cursor never meets Elasticsearch's 10,000-hit window (`from + size` is only
  used while it stays inside that window).
- A sort on a field orders, ascending: documents without a number or string there (missing,
  null, boolean, list or object) first, then numbers (exactly, as above), then strings (by code
  point, on their first KEYWORD_BYTES bytes), each group by record id; descending is the exact
  reverse (one sort on the path's key in `so`, fields.py: "1" and the number's code, or "2"
  and the string). For missing fields, nulls, numbers and strings this is SQLite's order too (the
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
    MAX_PATH_BYTES,
    SEARCH_FIELD,
    SEARCH_FIELDS,
    SEP,
    SORT_FIELD,
    keyword_cut,
    number_code,
    number_key,
    text_hash,
)
from tessera.storage.elastic.legacy import ensure_current
from tessera.storage.elastic.reads import complete_search, point_in_time
from tessera.storage.elastic.typed_paths import in_typed_form, typed_paths
from tessera.storage.ports import SearchPage
from tessera.storage.search import Cursor, SearchRequest, SortKey, timed_out

Query = dict[str, Any]

MATCH_ALL: Final[Query] = {"match_all": {}}
MATCH_NONE: Final[Query] = {"match_none": {}}
# Elasticsearch's default index.max_result_window: `from + size` may not go beyond it.
RESULT_WINDOW: Final = 10_000
# The client waits this much longer than a search's own timeout before it gives up.
CLIENT_TIMEOUT_SLACK_S: Final = 1.0
# A timed search is retried as the client retries everything (busy or restarting nodes), but
# never on 504: that is the search's own time running out, and sending it again would run the
# whole search again, up to the client's max_retries times.
TIMED_SEARCH_RETRY_STATUSES: Final = (429, 502, 503)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RANGE = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
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
        return _any([_condition(item) for item in node.items])
    if isinstance(node, Not):
        return _not(_condition(node.item))
    path = _path(node.field)
    on_terms = _leaf(node, path + SEP)
    if path not in typed_paths(node.field.entity):
        return on_terms
    return _either_form(path + SEP, on_terms, _typed_leaf(node, path))


def _leaf(node: Condition, at: str) -> Query:
    """A predicate on one path, over its search terms."""
    if isinstance(node, Exists):
        present = _prefix(at)
        return _not(present) if node.negated else present
    if isinstance(node, IsNull):
        valued = _valued(at)
        return valued if node.negated else _not(valued)
    if isinstance(node, Compare):
        if node.op == "==":
            return _equals(at, node.value, element=False)
        if node.op == "!=":
            equal = _equals(at, node.value, element=False)
            return {"bool": {"filter": [_valued(at)], "must_not": [equal]}}
        return _ordered(at, node.op, node.value)
    if isinstance(node, Between):
        return _all([_ordered(at, ">=", node.low), _ordered(at, "<=", node.high)])
    if isinstance(node, In):
        return _any([_equals(at, literal, element=False) for literal in node.values])
    if isinstance(node, Contains):
        return _contains(at, node.value)
    if isinstance(node, StartsWith | EndsWith):
        return _affix(at, node.value, suffix=isinstance(node, EndsWith))
    raise TypeError(f"not a condition: {node!r}")


# --- a typed path (typed_paths.py) --------------------------------------------------------------
# A document holds the value of such a path either in the keyword field alone (the typed form)
# or, when the field cannot hold it exactly (and in documents stored before), in search terms:
# whether the path has any term tells which, and each form is asked only of its documents.


def _either_form(at: str, on_terms: Query, on_field: Query) -> Query:
    has_terms = _prefix(at)
    typed = MATCH_NONE
    if on_field is not MATCH_NONE:
        typed = {"bool": {"filter": [on_field], "must_not": [has_terms]}}
    termed = MATCH_NONE
    if on_terms is not MATCH_NONE:
        termed = {"bool": {"filter": [on_terms, has_terms]}}
    return _any([typed, termed])


def _typed_leaf(node: Condition, name: str) -> Query:
    """A predicate on a keyword field whose value, when present, is a string in typed form
    (no U+0000, at most TYPED_MAX_CHARS): literals of another kind never match it."""
    present: Query = {"exists": {"field": name}}
    if isinstance(node, Exists):
        return _not(present) if node.negated else present
    if isinstance(node, IsNull):
        return present if node.negated else _not(present)
    if isinstance(node, Compare):
        if node.op == "==":
            return _typed_equals(name, node.value)
        if node.op == "!=":
            equal = _typed_equals(name, node.value)
            if equal is MATCH_NONE:
                return present
            return {"bool": {"filter": [present], "must_not": [equal]}}
        return _typed_ordered(name, node.op, node.value)
    if isinstance(node, Between):
        return _all([_typed_ordered(name, ">=", node.low), _typed_ordered(name, "<=", node.high)])
    if isinstance(node, In):
        return _any([_typed_equals(name, literal) for literal in node.values])
    text = _checked(node.value) if isinstance(node, Contains | StartsWith | EndsWith) else None
    if not isinstance(text, str) or "\x00" in text:
        return MATCH_NONE  # a string never contains a list's element, nor one cut at a NUL
    if not text:
        return present
    if isinstance(node, StartsWith):
        return {"prefix": {name: {"value": text}}}
    if isinstance(node, EndsWith):
        return {"wildcard": {name: {"value": "*" + _escaped(text)}}}
    if isinstance(node, Contains):
        return {"wildcard": {name: {"value": "*" + _escaped(text) + "*"}}}
    raise TypeError(f"not a condition: {node!r}")


def _typed_equals(name: str, literal: Literal) -> Query:
    value = _checked(literal)
    if isinstance(value, str) and in_typed_form(value):
        return {"term": {name: value}}
    return MATCH_NONE


def _typed_ordered(name: str, op: str, literal: Literal) -> Query:
    value = _checked(literal)
    if not isinstance(value, str):
        return MATCH_NONE
    return {"range": {name: {_RANGE[op]: value}}}


# --- one path -------------------------------------------------------------------------------
# `at` is the path and the separator: the start of every term of that path.


def _valued(at: str) -> Query:
    """The field is present and not null."""
    return {"bool": {"filter": [_prefix(at)], "must_not": [_term(at + "~null")]}}


def _equals(at: str, literal: Literal, *, element: bool) -> Query:
    """The value (or, with `element`, some list element) equals the literal."""
    value = _checked(literal)
    tag = "e" if element else ""
    if value is None:
        return MATCH_NONE
    if isinstance(value, bool):
        return _term(at + tag + ("b1" if value else "b0"))
    if isinstance(value, str):
        if "\x00" in value:
            return MATCH_NONE  # a stored text ends before its first U+0000
        head, cut = keyword_cut(value)
        if cut:
            return _term(at + tag + "h" + text_hash(value))
        equal = _term(at + tag + "s" + head)
        if element or len(value.encode()) <= KEYWORD_BYTES - 4:
            return equal
        # As long as a cut-down stored text may be: it must not be one.
        return {"bool": {"filter": [equal], "must_not": [_prefix(at + "h")]}}
    return _term(at + tag + "n" + number_code(_number(value)))


def _ordered(at: str, op: str, literal: Literal) -> Query:
    value = _checked(literal)
    if value is None or isinstance(value, bool):
        return MATCH_NONE
    if isinstance(value, str):
        _short(value, "compared")
        tag, bound = "s", value
    else:
        tag, bound = "n", number_code(_number(value))
    # Every value of the kind lies in [at + tag, at + the next tag).
    edge = {"gte": at + tag} if op in ("<", "<=") else {"lt": at + chr(ord(tag) + 1)}
    return {"range": {SEARCH_FIELD: {_RANGE[op]: at + tag + bound, **edge}}}


def _contains(at: str, literal: Literal) -> Query:
    value = _checked(literal)
    if value is None:
        return MATCH_NONE
    options = [_equals(at, literal, element=True)]
    if isinstance(value, str) and "\x00" not in value:
        _short(value, "searched for")
        if value:
            options.extend(_wildcard(at + tag + "*" + _escaped(value) + "*") for tag in ("s", "c"))
        else:
            options.append(_prefix(at + "s"))
    return _any(options)


def _affix(at: str, literal: Literal, *, suffix: bool) -> Query:
    value = _checked(literal)
    if not isinstance(value, str) or "\x00" in value:
        return MATCH_NONE
    _short(value, "matched")
    if not suffix:
        return _prefix(at + "s" + value)
    # A text that fits a keyword is whole in `s` (a cut one has an `h`, and its `s` is only
    # its beginning); a cut one keeps its tail reversed in `z` (fields.py).
    whole = {
        "bool": {
            "filter": [_wildcard(at + "s*" + _escaped(value))],
            "must_not": [_prefix(at + "h")],
        }
    }
    return _any([whole, _prefix(at + "z" + value[::-1])])


def _any(options: Sequence[Query]) -> Query:
    alive = [option for option in options if option is not MATCH_NONE]
    if not alive:
        return MATCH_NONE
    if len(alive) == 1:
        return alive[0]
    return {"bool": {"should": alive, "minimum_should_match": 1}}


def _all(items: Sequence[Query]) -> Query:
    if any(item is MATCH_NONE for item in items):
        return MATCH_NONE
    return {"bool": {"filter": list(items)}}


def _not(query: Query) -> Query:
    return {"bool": {"must_not": [query]}}


def _term(term: str) -> Query:
    return {"term": {SEARCH_FIELD: term}}


def _prefix(start: str) -> Query:
    return {"prefix": {SEARCH_FIELD: {"value": start}}}


def _wildcard(pattern: str) -> Query:
    return {"wildcard": {SEARCH_FIELD: {"value": pattern}}}


def _escaped(text: str) -> str:
    return "".join("\\" + char if char in _WILDCARD_SPECIAL else char for char in text)


def _path(field: Field) -> str:
    if not 1 <= len(field.path) <= MAX_PATH_SEGMENTS:
        raise QuerySyntaxError(f"condition: field {field} needs 1 to 16 path segments")
    for segment in field.path:
        if not SEGMENT.fullmatch(segment):
            raise QuerySyntaxError(f"condition: bad path segment {segment!r} in {field}")
    path = ".".join(field.path)
    if len(path) > MAX_PATH_BYTES:
        raise QuerySyntaxError(
            f"condition: field {field} is longer than {MAX_PATH_BYTES} characters"
        )
    return path


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
    order = "desc" if sort.descending else "asc"
    path = ".".join(sort.path)
    key = f"{SORT_FIELD}.{path}"
    # Numbers ("1…") before strings ("2…"); no key (missing, null, boolean, list, object)
    # before both.
    missing = "_last" if sort.descending else "_first"
    by_key = [{key: {"order": order, "missing": missing}}, {id_field: {"order": order}}]
    if path in typed_paths(sort.entity):
        # Strings in typed form have no sort key: the keyword field orders them (by code
        # point, as the keys do); the rest (null, a rare cut or NUL-holding string) has none
        # there and comes first (last descending), ordered by its key.
        return [{path: {"order": order, "missing": missing}}, *by_key]
    return by_key


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
    `source` is Elasticsearch's `_source` filter; by default the whole document but the
    search fields.
    Every shard must answer (reads.py): a page is never made of the shards that could.

    A condition or a sort is refused (legacy.SearchNeedsReshard, 503) while a partition under
    `index` has the search mapping of an earlier version, which it cannot read.

    With the request's ``timeout_s`` (TESSERA_SEARCH_TIMEOUT_SECONDS), Elasticsearch is asked
    to stop the search then (its ``timeout``; with partial results refused it answers 504,
    which is not retried), the client gives up a second later, and either way the caller gets
    SearchTimedOut.
    """
    if request.condition is not None or request.sort is not None:
        await ensure_current(client, index)
    if request.timeout_s is None:
        return await _search_page(client, index, request, query, moment_field, id_field, source)
    timed = client.options(
        request_timeout=request.timeout_s + CLIENT_TIMEOUT_SLACK_S,
        retry_on_status=TIMED_SEARCH_RETRY_STATUSES,
    )
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
        source = {"excludes": list(SEARCH_FIELDS)}
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
