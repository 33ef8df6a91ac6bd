"""Decide a condition against JSON documents held in memory.

`evaluate(condition, {"profile": {...}, "event": {...}, "session": {...}})` answers True or False,
never raises on any document, and gives the same answer as the SQL of `to_sqlite` run on the same
document stored as JSON (tests/unit/test_query_sqlite.py checks this on random documents and
conditions). The rules:

Reading a field
- `entity@a.b.c` reads key "a" of the entity's document, then key "b" of that object, then "c".
  Any step that is not an object, or has no such key, makes the field **missing**; a list is
  never entered (`profile@tags.0` is missing even when tags is a list). A record absent from
  `records` makes all its fields missing.
- Values are JSON values: null, true/false, numbers, strings, lists, objects. Two details follow
  SQLite's JSON functions so that both sides read the same value:
  - an integer outside the 64-bit range is read as the nearest float;
  - a string is read up to its first U+0000 character, if it holds one.

EXISTS and IS NULL
- `f EXISTS`: the field is present, whatever its value, null included. `f NOT EXISTS`: missing.
- `f IS NULL`: missing, or present and null. `f IS NOT NULL`: present and not null.

Comparisons need a value
- When the field is missing or null, every comparison is false: ==, !=, <, <=, >, >=, BETWEEN,
  IN, CONTAINS, STARTS WITH, ENDS WITH.
- A null literal equals nothing and orders with nothing. It only occurs in a hand-built tree: the
  parser reads `f == null` as `f IS NULL` and `f != null` as `f IS NOT NULL`, and refuses null
  elsewhere. (Built by hand, `f != null` is then IS NOT NULL too, by the rule for != below.)
- `==` is true when the value has the literal's kind and is equal to it: a number equals a number
  (integers and floats mix: `1 == 1.0`), a string a string (exactly, case-sensitive), a boolean a
  boolean. `true` is not `1`; `"5"` is not `5`; a list or an object equals no literal.
- `!=` is exactly `f IS NOT NULL AND NOT f == v`: the field is present, not null, and not equal.
  So a value of another kind, a list or an object is != every literal, a missing or null field is
  not != anything. To include missing fields, write `NOT f == v` (NOT is plain negation).
- `<`, `<=`, `>`, `>=` compare a number with a number or a string with a string (by code point,
  which is how ISO-8601 timestamps of the same format sort by time); any other pair is false.
- `f BETWEEN a AND b` is exactly `f >= a AND f <= b`.
- `f IN (a, b, ...)` is exactly `f == a OR f == b OR ...`.
- `f CONTAINS v`: for a string value and a string v, v is a substring (the empty string is a
  substring of every string); for a list value, some element `== v` by the rules above (a list
  element is never entered further); anything else is false.
- `f STARTS WITH s`, `f ENDS WITH s`: the value is a string and starts (ends) with s.

Boolean operators are two-valued: NOT, AND, OR do what they say; there is no "unknown".
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

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
    IsNull,
    Not,
    Or,
    Scalar,
    StartsWith,
)

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class _Missing:
    __slots__ = ()


MISSING: Final = _Missing()

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def evaluate(condition: Condition, records: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether the records satisfy the condition (see the module's rules)."""
    if isinstance(condition, And):
        return all(evaluate(item, records) for item in condition.items)
    if isinstance(condition, Or):
        return any(evaluate(item, records) for item in condition.items)
    if isinstance(condition, Not):
        return not evaluate(condition.item, records)
    value = read(records, condition.field)
    if isinstance(condition, Exists):
        return (value is MISSING) is condition.negated
    if isinstance(condition, IsNull):
        return (value is MISSING or value is None) is not condition.negated
    if value is MISSING or value is None:
        return False
    if isinstance(condition, Compare):
        if condition.op == "==":
            return _equals(value, condition.value.value)
        if condition.op == "!=":
            return not _equals(value, condition.value.value)
        return _ordered(condition.op, value, condition.value.value)
    if isinstance(condition, Between):
        return _ordered(">=", value, condition.low.value) and _ordered(
            "<=", value, condition.high.value
        )
    if isinstance(condition, In):
        return any(_equals(value, literal.value) for literal in condition.values)
    if isinstance(condition, Contains):
        return _contains(value, condition.value.value)
    if isinstance(condition, StartsWith):
        wanted = condition.value.value
        return (
            isinstance(value, str) and isinstance(wanted, str) and _text(value).startswith(wanted)
        )
    if isinstance(condition, EndsWith):
        wanted = condition.value.value
        return isinstance(value, str) and isinstance(wanted, str) and _text(value).endswith(wanted)
    raise TypeError(f"not a condition: {condition!r}")


def read(records: Mapping[str, Mapping[str, Any]], field: Field) -> Any:
    """The raw value at the field, or MISSING."""
    node: Any = records.get(field.entity, MISSING)
    for segment in field.path:
        if not isinstance(node, Mapping):
            return MISSING
        node = node.get(segment, MISSING)
    return node


def _text(value: str) -> str:
    cut = value.find("\x00")
    return value if cut < 0 else value[:cut]


def _number(value: Any) -> int | float | None:
    """The value as SQLite reads it if it is a JSON number, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else float(value)
    if isinstance(value, float):
        return value
    return None


def _equals(value: Any, literal: Scalar) -> bool:
    """`value == literal` for a present value (null included)."""
    if literal is None or value is None:
        return False
    if isinstance(literal, bool):
        return value is literal
    if isinstance(literal, str):
        return isinstance(value, str) and _text(value) == literal
    number = _number(value)
    return number is not None and number == literal


def _ordered(op: str, value: Any, literal: Scalar) -> bool:
    if literal is None or isinstance(literal, bool):
        return False
    if isinstance(literal, str):
        return isinstance(value, str) and _ORDER[op](_text(value), literal)
    number = _number(value)
    return number is not None and _ORDER[op](number, literal)


def _contains(value: Any, literal: Scalar) -> bool:
    if isinstance(value, str):
        return isinstance(literal, str) and literal in _text(value)
    if isinstance(value, list | tuple):
        return any(_equals(item, literal) for item in value)
    return False
