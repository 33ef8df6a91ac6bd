"""The syntax tree of a condition: immutable, hashable, pure data.

`parse` builds these; `evaluate` and `to_sqlite` read them. A tree may also be built by hand;
`evaluate` and `to_sqlite` then follow the same rules as for a parsed one (see evaluate.py).
`to_text` writes a tree back in the condition language, so that `parse(to_text(c)) == c` for
every tree the parser can produce.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal as TypingLiteral
from typing import TypeAlias

ENTITIES = frozenset({"profile", "event", "session"})
MAX_PATH_SEGMENTS = 16
SEGMENT = re.compile(r"[A-Za-z0-9_-]+")

Scalar: TypeAlias = str | int | float | bool | None
CompareOp: TypeAlias = TypingLiteral["==", "!=", ">", ">=", "<", "<="]
COMPARE_OPS: frozenset[str] = frozenset({"==", "!=", ">", ">=", "<", "<="})


@dataclass(frozen=True, slots=True)
class Field:
    """`entity@a.b.c`: the value at path ("a", "b", "c") of the entity's JSON document."""

    entity: str
    path: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.entity}@{'.'.join(self.path)}"


@dataclass(frozen=True, slots=True, eq=False)
class Literal:
    """A constant: a string, an integer, a float, true, false or null.

    Equality also compares the Python type, so `Literal(1)`, `Literal(1.0)` and `Literal(True)`
    are three different literals (they are three different tokens of the language).
    """

    value: Scalar

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Literal):
            return NotImplemented
        return type(self.value) is type(other.value) and self.value == other.value

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))


@dataclass(frozen=True, slots=True)
class Compare:
    op: CompareOp
    field: Field
    value: Literal


@dataclass(frozen=True, slots=True)
class Between:
    """`field BETWEEN low AND high`, bounds included."""

    field: Field
    low: Literal
    high: Literal


@dataclass(frozen=True, slots=True)
class Exists:
    """`field EXISTS` (the path is present, even if null); negated: `field NOT EXISTS`."""

    field: Field
    negated: bool = False


@dataclass(frozen=True, slots=True)
class IsNull:
    """`field IS NULL` (missing or null); negated: `field IS NOT NULL`."""

    field: Field
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Contains:
    field: Field
    value: Literal


@dataclass(frozen=True, slots=True)
class StartsWith:
    field: Field
    value: Literal


@dataclass(frozen=True, slots=True)
class EndsWith:
    field: Field
    value: Literal


@dataclass(frozen=True, slots=True)
class In:
    field: Field
    values: tuple[Literal, ...]


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Condition


Predicate: TypeAlias = Compare | Between | Exists | IsNull | Contains | StartsWith | EndsWith | In
Condition: TypeAlias = Predicate | And | Or | Not


def iter_fields(condition: Condition) -> Iterator[Field]:
    """Every field the condition reads, in text order (a field read twice comes twice)."""
    stack: list[Condition] = [condition]
    while stack:
        node = stack.pop()
        if isinstance(node, And | Or):
            stack.extend(reversed(node.items))
        elif isinstance(node, Not):
            stack.append(node.item)
        else:
            yield node.field


def to_text(condition: Condition) -> str:
    """The condition in the language, with as few parentheses as the tree needs."""
    if isinstance(condition, Or):
        return " OR ".join(_operand(item, Or) for item in condition.items)
    if isinstance(condition, And):
        return " AND ".join(_operand(item, And) for item in condition.items)
    if isinstance(condition, Not):
        return "NOT " + _operand(condition.item, Not)
    field = str(condition.field)
    if isinstance(condition, Compare):
        return f"{field} {condition.op} {literal_text(condition.value)}"
    if isinstance(condition, Between):
        low, high = literal_text(condition.low), literal_text(condition.high)
        return f"{field} BETWEEN {low} AND {high}"
    if isinstance(condition, Exists):
        return f"{field} NOT EXISTS" if condition.negated else f"{field} EXISTS"
    if isinstance(condition, IsNull):
        return f"{field} IS NOT NULL" if condition.negated else f"{field} IS NULL"
    if isinstance(condition, Contains):
        return f"{field} CONTAINS {literal_text(condition.value)}"
    if isinstance(condition, StartsWith):
        return f"{field} STARTS WITH {literal_text(condition.value)}"
    if isinstance(condition, EndsWith):
        return f"{field} ENDS WITH {literal_text(condition.value)}"
    values = ", ".join(literal_text(value) for value in condition.values)
    return f"{field} IN ({values})"


def _operand(item: Condition, parent: type[And | Or | Not]) -> str:
    text = to_text(item)
    # A nested And/Or always gets parentheses: the parser flattens `a AND b AND c` into one
    # And, so `And((a, And((b, c))))` needs them to come back as it was.
    if isinstance(item, And | Or) and not (parent is Or and isinstance(item, And)):
        return f"({text})"
    return text


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def literal_text(literal: Literal) -> str:
    value = literal.value
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return repr(value)
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char < " " or "\ud800" <= char <= "\udfff":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
