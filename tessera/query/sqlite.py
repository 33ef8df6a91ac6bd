"""Translate a condition into a SQLite WHERE fragment over a JSON document column.

    sql, params = to_sqlite(parse("profile@traits.plan == 'pro'"), "profile")
    rows = connection.execute(
        f"SELECT doc FROM profiles WHERE tenant = ? AND {sql}", ["default", *params]
    )

The fragment answers exactly as `evaluate` does (same rules, see evaluate.py), document by
document, including missing fields, nulls, booleans, lists, mixed integers and floats and values
of the wrong kind. How:

- Every predicate first asks `json_type(doc, path)` (NULL when the path is missing, else 'null',
  'true', 'false', 'integer', 'real', 'text', 'array' or 'object') and only reads the value with
  `json_extract` when the type fits the literal. So JSON true never meets the integer 1 that
  json_extract would return for it, and a string never meets a number.
- Every predicate is 0 or 1, never NULL (the type tests use `IS` and `ifnull`), so NOT, AND and
  OR are two-valued as in Python.
- Substring, prefix and suffix tests compare UTF-8 bytes (CAST(... AS BLOB)), which gives the
  same answers as Python's str methods without depending on LIKE, GLOB or character counts.
- List membership (CONTAINS on a list) runs `json_each` over the list, comparing element types.

Only fields of the searched entity may appear. Literals go in `?` parameters, in the order of
the `?`s in the fragment. Paths are written into the SQL as `'$."seg"."seg"'`, built only from
segments checked against [A-Za-z0-9_-]+ (again here, in case the tree was built by hand). The
fragment is wrapped in parentheses, ready to be joined with AND.

The document column may hold JSON as TEXT or as a BLOB of UTF-8 JSON (as the embedded store
writes it). SQLite 3.38 or later (JSON functions built in).
"""

from __future__ import annotations

import math
import re
from typing import Any

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

_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")
# Columns of json_each(): an unqualified document column with one of these names would be read
# from json_each inside the membership subquery.
_JSON_EACH_COLUMNS = frozenset(
    {"key", "value", "type", "atom", "id", "parent", "fullkey", "path", "json", "root"}
)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ORDER_OPS = frozenset({">", ">=", "<", "<="})
_FALSE = "0"
_TRUE = "1"


def to_sqlite(condition: Condition, entity: str, doc_column: str = "doc") -> tuple[str, list[Any]]:
    """A WHERE fragment and its parameters, for rows whose `doc_column` is `entity`'s document.

    Raises QuerySyntaxError when the condition reads a field of another entity or holds a
    literal SQLite cannot take (an integer beyond 64 bits, a float that is not finite, a string
    with an unpaired surrogate), and ValueError for an unknown entity or a bad column name
    (mistakes of the caller, not of the condition).
    """
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}")
    if not _COLUMN.fullmatch(doc_column) or doc_column.lower() in _JSON_EACH_COLUMNS:
        raise ValueError(f"bad document column {doc_column!r}: use a plain or qualified name")
    for field in iter_fields(condition):
        if field.entity != entity:
            raise QuerySyntaxError(
                f"condition: field {field} cannot be used when searching {entity}s"
            )
    translator = _Translator(doc_column)
    sql = translator.condition(condition)
    return f"({sql})", translator.params


class _Translator:
    def __init__(self, doc_column: str) -> None:
        self.doc = doc_column
        self.params: list[Any] = []

    def condition(self, node: Condition) -> str:
        if isinstance(node, And):
            return _balanced([self.condition(item) for item in node.items], " AND ", _TRUE)
        if isinstance(node, Or):
            return _balanced([self.condition(item) for item in node.items], " OR ", _FALSE)
        if isinstance(node, Not):
            return f"NOT ({self.condition(node.item)})"
        path = _json_path(node.field)
        kind = f"json_type({self.doc}, {path})"
        if isinstance(node, Exists):
            return f"{kind} IS NULL" if node.negated else f"{kind} IS NOT NULL"
        if isinstance(node, IsNull):
            return f"ifnull({kind}, 'null') {'<>' if node.negated else '='} 'null'"
        if isinstance(node, Compare):
            if node.op == "==":
                return self.equals(path, node.value)
            if node.op == "!=":
                return f"(ifnull({kind}, 'null') <> 'null' AND NOT {self.equals(path, node.value)})"
            return self.ordered(node.op, path, node.value)
        if isinstance(node, Between):
            low = self.ordered(">=", path, node.low)
            high = self.ordered("<=", path, node.high)
            return f"({low} AND {high})"
        if isinstance(node, In):
            return _balanced(
                [self.equals(path, literal) for literal in node.values], " OR ", _FALSE
            )
        if isinstance(node, Contains):
            return self.contains(path, node.value)
        if isinstance(node, StartsWith):
            return self.affix(path, node.value, suffix=False)
        if isinstance(node, EndsWith):
            return self.affix(path, node.value, suffix=True)
        raise TypeError(f"not a condition: {node!r}")

    def param(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def equals(self, path: str, literal: Literal) -> str:
        value = _checked(literal)
        kind = f"json_type({self.doc}, {path})"
        if value is None:
            return _FALSE
        if isinstance(value, bool):
            return f"{kind} IS '{'true' if value else 'false'}'"
        read = f"json_extract({self.doc}, {path})"
        if isinstance(value, str):
            return f"({kind} IS 'text' AND {read} = {self.param(value)})"
        return f"(ifnull({kind}, '') IN ('integer', 'real') AND {read} = {self.param(value)})"

    def ordered(self, op: str, path: str, literal: Literal) -> str:
        value = _checked(literal)
        if op not in _ORDER_OPS:
            raise ValueError(f"not an ordering operator: {op!r}")
        if value is None or isinstance(value, bool):
            return _FALSE
        kind = f"json_type({self.doc}, {path})"
        read = f"json_extract({self.doc}, {path})"
        if isinstance(value, str):
            return f"({kind} IS 'text' AND {read} {op} {self.param(value)})"
        return f"(ifnull({kind}, '') IN ('integer', 'real') AND {read} {op} {self.param(value)})"

    def contains(self, path: str, literal: Literal) -> str:
        value = _checked(literal)
        if value is None:
            return _FALSE
        kind = f"json_type({self.doc}, {path})"
        tests = []
        if isinstance(value, str):
            read = f"json_extract({self.doc}, {path})"
            needle = self.param(value.encode())
            tests.append(f"({kind} IS 'text' AND instr(CAST({read} AS BLOB), {needle}) > 0)")
        if isinstance(value, bool):
            element = f"je.type = '{'true' if value else 'false'}'"
        elif isinstance(value, str):
            element = f"je.type = 'text' AND je.value = {self.param(value)}"
        else:
            element = f"je.type IN ('integer', 'real') AND je.value = {self.param(value)}"
        # Every name here is checked (column, path) or written by this module; values are `?`s.
        members = f"SELECT 1 FROM json_each({self.doc}, {path}) AS je WHERE {element}"  # noqa: S608
        tests.append(f"({kind} IS 'array' AND EXISTS ({members}))")
        return "(" + " OR ".join(tests) + ")"

    def affix(self, path: str, literal: Literal, *, suffix: bool) -> str:
        value = _checked(literal)
        if not isinstance(value, str):
            return _FALSE
        kind = f"json_type({self.doc}, {path})"
        if not value:
            return f"{kind} IS 'text'"
        data = value.encode()
        read = f"CAST(json_extract({self.doc}, {path}) AS BLOB)"
        if suffix:
            part = f"substr({read}, {self.param(-len(data))})"
        else:
            part = f"substr({read}, 1, {self.param(len(data))})"
        # substr() of an empty BLOB is NULL, hence the ifnull.
        return f"({kind} IS 'text' AND ifnull({part} = {self.param(data)}, 0))"


def _balanced(parts: list[str], joiner: str, empty: str) -> str:
    """The parts joined as a balanced tree of parentheses, in their order (so the `?`s keep
    theirs). SQLite reads `a OR b OR c …` as a chain one level deeper per term and refuses a
    tree deeper than 1000 levels (SQLITE_MAX_EXPR_DEPTH); balanced, n terms nest log2(n)."""
    if not parts:
        return empty
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    left = _balanced(parts[:middle], joiner, empty)
    return f"({left}{joiner}{_balanced(parts[middle:], joiner, empty)})"


def _json_path(field: Field) -> str:
    """`'$."a"."b"'`, as an SQL string literal; only from checked segments."""
    if not 1 <= len(field.path) <= MAX_PATH_SEGMENTS:
        raise QuerySyntaxError(f"condition: field {field} needs 1 to 16 path segments")
    for segment in field.path:
        if not SEGMENT.fullmatch(segment):
            raise QuerySyntaxError(f"condition: bad path segment {segment!r} in {field}")
    return "'$" + "".join(f'."{segment}"' for segment in field.path) + "'"


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
