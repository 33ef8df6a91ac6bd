r"""Read the condition language into a tree (tessera.query.ast).

    profile@traits.plan == "pro" AND NOT (profile@stats.visits < 3 OR profile@traits.vip EXISTS)

Grammar, loosest binding first (keywords are case-insensitive; paths are not):

    condition  := or
    or         := and ("OR" and)*                 left-associative, flattened into one Or
    and        := not ("AND" not)*                left-associative, flattened into one And
    not        := "NOT" not | "(" or ")" | predicate
    predicate  := field ("==" | "!=" | ">" | ">=" | "<" | "<=") value
                | field "BETWEEN" value "AND" value
                | field ["NOT"] "EXISTS"
                | field "IS" ["NOT"] "NULL"
                | field "CONTAINS" value
                | field "STARTS" "WITH" string | field "ENDS" "WITH" string
                | field "IN" "(" value ("," value)* ")"
    field      := ("profile" | "event" | "session") "@" segment ("." segment)*   (1 to 16 segments)
    segment    := [A-Za-z0-9_-]+
    value      := string | integer | float | "true" | "false" | "null"

So `a OR b AND c` is `a OR (b AND c)` and `NOT a AND b` is `(NOT a) AND b`. The AND of
`BETWEEN x AND y` belongs to the BETWEEN: the parser is LALR, and after `field BETWEEN value` the
only thing it can read is that AND.

Strings take single or double quotes and the escapes \\ \' \" \/ \n \r \t \b \f \uXXXX (a
surrogate pair makes one character). Numbers: `-?digits[.digits][e[+-]digits]`; one with a point
or an exponent is a float, any other an integer (at most 64 bits).

Checks beyond the grammar (each a QuerySyntaxError naming the place):
- `field == null` means `field IS NULL` and `field != null` means `field IS NOT NULL` (they are
  parsed as such); null is refused anywhere else (ordering, BETWEEN, IN, CONTAINS).
- `<`, `<=`, `>`, `>=` and BETWEEN take numbers or strings; BETWEEN's two bounds take the same
  kind. STARTS WITH and ENDS WITH take a string.
- The text is at most 10,000 characters; AND, OR and NOT nest at most 64 levels deep and
  parentheses too, so no later step can run out of stack.
- IN lists at most 1,000 values (MAX_IN_VALUES).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from tessera.query.ast import (
    ENTITIES,
    MAX_PATH_SEGMENTS,
    SEGMENT,
    And,
    Between,
    Compare,
    CompareOp,
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
    StartsWith,
)
from tessera.query.errors import QuerySyntaxError, syntax_error

MAX_TEXT_LENGTH = 10_000
MAX_DEPTH = 64
# Values one IN may list. Each becomes clauses of its own in every backend's query, so the
# list bounds what one condition may ask of them (Elasticsearch refuses a query past its
# clause limit); a thousand covers any list written by hand, longer ones belong in a segment.
MAX_IN_VALUES = 1_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

GRAMMAR = r"""
?start: or_expr

?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: NOT not_expr                                   -> negation
         | LPAR or_expr _RPAR                             -> group
         | predicate

?predicate: FIELD COMPARE value                          -> compare
          | FIELD _BETWEEN value _AND value              -> between
          | FIELD _EXISTS                                -> exists
          | FIELD NOT _EXISTS                            -> not_exists
          | FIELD _IS NULL                               -> is_null
          | FIELD _IS NOT NULL                           -> is_not_null
          | FIELD _CONTAINS value                        -> contains
          | FIELD _STARTS _WITH value                    -> starts_with
          | FIELD _ENDS _WITH value                      -> ends_with
          | FIELD _IN LPAR value (_COMMA value)* _RPAR   -> in_list

?value: STRING | NUMBER | TRUE | FALSE | NULL

// Everything up to a space, parenthesis, quote, comma or operator character, so that a bad
// path is reported as a bad path rather than as a stray character.
FIELD.3: /[A-Za-z_][A-Za-z0-9_]*@[^\s()'",=!<>]*/
STRING: /"(?:[^"\\]|\\[\s\S])*"/ | /'(?:[^'\\]|\\[\s\S])*'/
NUMBER: /-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/
COMPARE: /==|!=|>=|<=|>|</
LPAR: "("
_RPAR: ")"
_COMMA: ","

_OR.2: /or\b/i
_AND.2: /and\b/i
NOT.2: /not\b/i
_BETWEEN.2: /between\b/i
_EXISTS.2: /exists\b/i
_IS.2: /is\b/i
NULL.2: /null\b/i
_CONTAINS.2: /contains\b/i
_STARTS.2: /starts\b/i
_ENDS.2: /ends\b/i
_WITH.2: /with\b/i
_IN.2: /in\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i

%ignore /\s+/
"""


class _Node(NamedTuple):
    """A condition while it is being built: how deep it nests and where it starts."""

    condition: Condition
    levels: int  # nested And / Or / Not
    parens: int  # nested parentheses
    line: int
    column: int


def _too_deep(line: int, column: int) -> QuerySyntaxError:
    return syntax_error(f"conditions nest more than {MAX_DEPTH} levels deep", line, column)


class _Builder(Transformer[Token, _Node]):
    """Called by the LALR parser at each reduction, bottom-up: no parse tree, no recursion."""

    def negation(self, children: list[Any]) -> _Node:
        keyword, inner = children
        return _nested(Not(inner.condition), [inner], keyword)

    def group(self, children: list[Any]) -> _Node:
        lpar, inner = children
        if inner.parens >= MAX_DEPTH:
            raise _too_deep(lpar.line, lpar.column)
        return _Node(inner.condition, inner.levels, inner.parens + 1, lpar.line, lpar.column)

    def or_expr(self, children: list[_Node]) -> _Node:
        return _nested(Or(tuple(child.condition for child in children)), children, None)

    def and_expr(self, children: list[_Node]) -> _Node:
        return _nested(And(tuple(child.condition for child in children)), children, None)

    def compare(self, children: list[Token]) -> _Node:
        field_token, op_token, value_token = children
        field = _field(field_token)
        op: CompareOp = op_token.value  # the COMPARE terminal: one of the six
        value = _literal(value_token)
        if value.value is None:
            if op in ("==", "!="):
                return _leaf(IsNull(field, negated=op == "!="), field_token)
            raise _wrong_value(value_token, f"'{op}' needs a number or a string; use IS NULL")
        if op not in ("==", "!=") and isinstance(value.value, bool):
            raise _wrong_value(value_token, f"'{op}' needs a number or a string")
        return _leaf(Compare(op, field, value), field_token)

    def between(self, children: list[Token]) -> _Node:
        field_token, low_token, high_token = children
        low, high = _literal(low_token), _literal(high_token)
        for token, literal in ((low_token, low), (high_token, high)):
            if literal.value is None or isinstance(literal.value, bool):
                raise _wrong_value(token, "BETWEEN needs two numbers or two strings")
        if isinstance(low.value, str) != isinstance(high.value, str):
            raise _wrong_value(high_token, "BETWEEN needs two numbers or two strings")
        return _leaf(Between(_field(field_token), low, high), field_token)

    def exists(self, children: list[Token]) -> _Node:
        return _leaf(Exists(_field(children[0])), children[0])

    def not_exists(self, children: list[Token]) -> _Node:
        return _leaf(Exists(_field(children[0]), negated=True), children[0])

    def is_null(self, children: list[Token]) -> _Node:
        return _leaf(IsNull(_field(children[0])), children[0])

    def is_not_null(self, children: list[Token]) -> _Node:
        return _leaf(IsNull(_field(children[0]), negated=True), children[0])

    def contains(self, children: list[Token]) -> _Node:
        field_token, value_token = children
        value = _literal(value_token)
        if value.value is None:
            raise _wrong_value(value_token, "CONTAINS needs a string, a number or a boolean")
        return _leaf(Contains(_field(field_token), value), field_token)

    def starts_with(self, children: list[Token]) -> _Node:
        field_token, value_token = children
        value = _string_literal(value_token, "STARTS WITH")
        return _leaf(StartsWith(_field(field_token), value), field_token)

    def ends_with(self, children: list[Token]) -> _Node:
        field_token, value_token = children
        value = _string_literal(value_token, "ENDS WITH")
        return _leaf(EndsWith(_field(field_token), value), field_token)

    def in_list(self, children: list[Token]) -> _Node:
        field_token, _lpar, *value_tokens = children
        if len(value_tokens) > MAX_IN_VALUES:
            raise syntax_error(
                f"IN lists {len(value_tokens):,} values, more than {MAX_IN_VALUES:,}",
                _line(value_tokens[MAX_IN_VALUES]),
                _column(value_tokens[MAX_IN_VALUES]),
            )
        values = []
        for token in value_tokens:
            value = _literal(token)
            if value.value is None:
                raise _wrong_value(token, "IN cannot list null; use IS NULL")
            values.append(value)
        return _leaf(In(_field(field_token), tuple(values)), field_token)


def _leaf(condition: Condition, token: Token) -> _Node:
    return _Node(condition, 0, 0, _line(token), _column(token))


def _nested(condition: Condition, children: list[_Node], token: Token | None) -> _Node:
    levels = max(child.levels for child in children) + 1
    parens = max(child.parens for child in children)
    if token is not None:
        line, column = _line(token), _column(token)
    else:
        line, column = children[0].line, children[0].column
    if levels > MAX_DEPTH:
        raise _too_deep(line, column)
    return _Node(condition, levels, parens, line, column)


def _int(value: int | None) -> int:
    return value if value is not None else 1


def _line(token: Token) -> int:
    return _int(token.line)


def _column(token: Token) -> int:
    return _int(token.column)


def _wrong_value(token: Token, reason: str) -> QuerySyntaxError:
    return syntax_error(f"{reason}, not {_shown(token.value)}", _line(token), _column(token))


def _string_literal(token: Token, operator: str) -> Literal:
    value = _literal(token)
    if not isinstance(value.value, str):
        raise _wrong_value(token, f"{operator} needs a string")
    return value


def _field(token: Token) -> Field:
    text: str = token.value
    entity, _, path_text = text.partition("@")
    line, column = _line(token), _column(token)
    if entity.lower() not in ENTITIES:
        raise syntax_error(
            f"unknown entity {_shown(entity)}", line, column, "profile, event or session"
        )
    if not path_text:
        raise syntax_error(f"{_shown(text)} has no path", line, column + len(text), "a path")
    segments = path_text.split(".")
    offset = column + len(entity) + 1
    for index, segment in enumerate(segments):
        if index == MAX_PATH_SEGMENTS:
            raise syntax_error(
                f"{_shown(text)} has more than {MAX_PATH_SEGMENTS} path segments", line, offset
            )
        if not SEGMENT.fullmatch(segment):
            reason = f"bad path segment {_shown(segment)}" if segment else "empty path segment"
            raise syntax_error(
                f"{reason} in {_shown(text)}", line, offset, "letters, digits, '_' or '-'"
            )
        offset += len(segment) + 1
    return Field(entity.lower(), tuple(segments))


def _literal(token: Token) -> Literal:
    kind = token.type
    text: str = token.value
    if kind == "STRING":
        return Literal(_unescape(token))
    if kind == "NUMBER":
        if any(char in text for char in ".eE"):
            number = float(text)
            if not math.isfinite(number):
                raise syntax_error(
                    f"number {_shown(text)} is too large", _line(token), _column(token)
                )
            return Literal(number)
        integer = int(text)
        if not INT64_MIN <= integer <= INT64_MAX:
            raise syntax_error(
                f"integer {_shown(text)} does not fit in 64 bits (write it as a float)",
                _line(token),
                _column(token),
            )
        return Literal(integer)
    if kind == "TRUE":
        return Literal(True)
    if kind == "FALSE":
        return Literal(False)
    return Literal(None)


_SIMPLE_ESCAPES = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "/": "/",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
}
_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|[\s\S])")
_SURROGATE = re.compile("[\ud800-\udfff]")
_HIGH = range(0xD800, 0xDC00)
_LOW = range(0xDC00, 0xE000)


def _unescape(token: Token) -> str:
    raw: str = token.value[1:-1]
    out: list[str] = []
    position = 0
    pending_high: int | None = None  # a \uD800-\uDBFF waiting for its low half
    pending_at = 0
    for match in _ESCAPE.finditer(raw):
        if match.start() != position and pending_high is not None:
            raise _escape_error(token, pending_at, "unpaired surrogate")
        out.append(raw[position : match.start()])
        position = match.end()
        code = match.group(1)
        if code[0] == "u" and len(code) == 5:
            number = int(code[1:], 16)
            if pending_high is not None:
                if number not in _LOW:
                    raise _escape_error(token, pending_at, "unpaired surrogate")
                out.append(chr(0x10000 + ((pending_high - 0xD800) << 10) + (number - 0xDC00)))
                pending_high = None
            elif number in _HIGH:
                pending_high, pending_at = number, match.start()
            elif number in _LOW:
                raise _escape_error(token, match.start(), "unpaired surrogate")
            else:
                out.append(chr(number))
            continue
        if pending_high is not None:
            raise _escape_error(token, pending_at, "unpaired surrogate")
        if code not in _SIMPLE_ESCAPES:
            raise _escape_error(token, match.start(), f"unknown escape {_shown(match.group())}")
        out.append(_SIMPLE_ESCAPES[code])
    if pending_high is not None:
        raise _escape_error(token, pending_at, "unpaired surrogate")
    out.append(raw[position:])
    # Only possible in the text itself: escaped surrogates were paired above.
    lone = _SURROGATE.search(raw)
    if lone is not None:
        raise _escape_error(token, lone.start(), "unpaired surrogate")
    return "".join(out)


def _escape_error(token: Token, offset: int, reason: str) -> QuerySyntaxError:
    before = token.value[: offset + 1]  # + 1: the opening quote
    newlines = before.count("\n")
    line = _line(token) + newlines
    column = len(before) - before.rfind("\n") if newlines else _column(token) + len(before)
    return syntax_error(reason, line, column)


def _shown(text: str, limit: int = 40) -> str:
    if len(text) > limit:
        text = text[:limit] + "…"
    return "'" + text.replace("\n", "\\n") + "'"


def _check_field(token: Token) -> Token:
    _field(token)
    return token


def _check_literal(token: Token) -> Token:
    _literal(token)
    return token


# Fields and literals are checked as soon as they are read, so that the first error in the text is
# the one reported, then checked again (cheaply) when the predicate is built.
_PARSER = Lark(
    GRAMMAR,
    parser="lalr",
    lexer="contextual",
    transformer=_Builder(),
    lexer_callbacks={"FIELD": _check_field, "STRING": _check_literal, "NUMBER": _check_literal},
)


def parse(text: str) -> Condition:
    """The tree of `text`; QuerySyntaxError (an InvalidPayload: HTTP 422) when it cannot be."""
    if len(text) > MAX_TEXT_LENGTH:
        line, column = _position(text, MAX_TEXT_LENGTH)
        raise syntax_error(
            f"the text is {len(text):,} characters long, more than {MAX_TEXT_LENGTH:,}",
            line,
            column,
        )
    return _parse(text)


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> Condition:
    try:
        node: Any = _PARSER.parse(text)  # a _Node: the builder runs inside the parser
    except VisitError as error:  # lark wraps what a callback raises in some versions
        if isinstance(error.orig_exc, QuerySyntaxError):
            raise error.orig_exc from None
        raise
    except UnexpectedInput as error:
        raise _explain(text, error) from None
    assert isinstance(node, _Node)
    return node.condition


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - text.rfind("\n", 0, offset)


_KEYWORDS = {
    "_AND": "AND",
    "_OR": "OR",
    "NOT": "NOT",
    "_BETWEEN": "BETWEEN",
    "_EXISTS": "EXISTS",
    "_IS": "IS",
    "_CONTAINS": "CONTAINS",
    "_STARTS": "STARTS",
    "_ENDS": "ENDS",
    "_WITH": "WITH",
    "_IN": "IN",
}
_VALUES = frozenset({"STRING", "NUMBER", "TRUE", "FALSE"})
_OPERATORS = (
    "an operator (==, !=, <, <=, >, >=, BETWEEN, EXISTS, NOT EXISTS, IS NULL, IS NOT NULL, "
    "CONTAINS, STARTS WITH, ENDS WITH or IN)"
)


def _expected(names: set[str]) -> str:
    if "COMPARE" in names:
        return _OPERATORS
    wanted: list[str] = []
    if "FIELD" in names:
        wanted.append("a field")
    if names & _VALUES:
        wanted.append("a value")
    elif "NULL" in names:
        wanted.append("NULL")
    wanted.extend(word for name, word in _KEYWORDS.items() if name in names)
    if "LPAR" in names:
        wanted.append("'('")
    if "_RPAR" in names:
        wanted.append("')'")
    if "_COMMA" in names:
        wanted.append("','")
    if "$END" in names:
        wanted.append("the end of the text")
    if len(wanted) < 2:
        return "".join(wanted)
    return ", ".join(wanted[:-1]) + " or " + wanted[-1]


_WORD = re.compile(r"[A-Za-z0-9_@.\-]+")


def _explain(text: str, error: UnexpectedInput) -> QuerySyntaxError:
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            expected = _expected(_acceptable(text, len(text), error.expected))
            line, column = _position(text, len(text.rstrip()))
            what = "unexpected end of the text" if text.strip() else "empty condition"
            return syntax_error(what, line, column, expected)
        offset = _int(token.start_pos)
        expected = _expected(_acceptable(text, offset, error.expected))
        what = (
            f"string {_shown(token.value)[1:-1]}" if token.type == "STRING" else _shown(token.value)
        )
        return syntax_error(f"unexpected {what}", _line(token), _column(token), expected)
    if isinstance(error, UnexpectedCharacters):
        where: int = error.pos_in_stream or 0  # typed None in lark, set on every instance
        line, column = _position(text, where)
        char = text[where]
        if char in "'\"":
            return syntax_error("unterminated string", line, column)
        word = _WORD.match(text, where)
        shown = word.group() if word else char
        expected = _expected(_acceptable(text, where, error.allowed))
        return syntax_error(f"unexpected {_shown(shown)}", line, column, expected)
    line, column = _position(text, len(text))
    return syntax_error("unexpected end of the text", line, column)


def _acceptable(text: str, offset: int, fallback: Collection[str]) -> set[str]:
    """The terminals that may come at `offset`, after everything before it.

    Lark's own sets are taken after the failing token's reductions (so `a == 1 )` would only
    expect the end of the text, not AND or OR); this feeds the tokens before `offset` again and
    asks the parser in that state.
    """
    interactive = _PARSER.parse_interactive(text)
    try:
        for token in interactive.iter_parse():  # yields each token before feeding it
            if _int(token.start_pos) >= offset:
                break
    except UnexpectedInput:
        pass  # the lexer stops at the same place as before, after feeding what came before
    accepts: Callable[[], set[str]] = interactive.accepts  # untyped in lark
    try:
        return set(accepts())
    except (UnexpectedInput, QuerySyntaxError):
        return set(fallback)
