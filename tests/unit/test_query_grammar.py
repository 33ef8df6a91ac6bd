"""The condition language's grammar: every operator, precedence, literals and bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.errors import InvalidPayload
from tessera.query import (
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_TEXT_LENGTH,
    QuerySyntaxError,
    parse,
    to_text,
)
from tessera.query.ast import (
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

A = "profile@a EXISTS"
B = "profile@b EXISTS"
C = "profile@c EXISTS"


def f(text: str) -> Field:
    entity, _, path = text.partition("@")
    return Field(entity, tuple(path.split(".")))


def exists(name: str) -> Exists:
    return Exists(f(f"profile@{name}"))


def lit(value: str | int | float | bool | None) -> Literal:
    return Literal(value)


# --- operators ------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["==", "!=", ">", ">=", "<", "<="])
def test_every_comparison_operator(op: CompareOp) -> None:
    assert parse(f"profile@stats.visits {op} 3") == Compare(op, f("profile@stats.visits"), lit(3))


def test_operators_need_no_spaces() -> None:
    assert parse("profile@a>=3") == Compare(">=", f("profile@a"), lit(3))
    assert parse("profile@a=='x'") == Compare("==", f("profile@a"), lit("x"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("profile@a BETWEEN 1 AND 5", Between(f("profile@a"), lit(1), lit(5))),
        ("profile@a BETWEEN 'a' AND 'm'", Between(f("profile@a"), lit("a"), lit("m"))),
        ("profile@a BETWEEN -1.5 AND 2", Between(f("profile@a"), lit(-1.5), lit(2))),
        ("profile@a EXISTS", Exists(f("profile@a"))),
        ("profile@a NOT EXISTS", Exists(f("profile@a"), negated=True)),
        ("profile@a IS NULL", IsNull(f("profile@a"))),
        ("profile@a IS NOT NULL", IsNull(f("profile@a"), negated=True)),
        ("profile@a CONTAINS 'x'", Contains(f("profile@a"), lit("x"))),
        ("profile@a CONTAINS 3", Contains(f("profile@a"), lit(3))),
        ("profile@a CONTAINS true", Contains(f("profile@a"), lit(True))),
        ("profile@a STARTS WITH 'ab'", StartsWith(f("profile@a"), lit("ab"))),
        ('profile@a ENDS WITH "yz"', EndsWith(f("profile@a"), lit("yz"))),
        ("profile@a IN ('a', 'b', 1)", In(f("profile@a"), (lit("a"), lit("b"), lit(1)))),
        ("profile@a IN (2)", In(f("profile@a"), (lit(2),))),
        ("profile@a IN (true,false)", In(f("profile@a"), (lit(True), lit(False)))),
        ("profile@a == true", Compare("==", f("profile@a"), lit(True))),
        ("profile@a != false", Compare("!=", f("profile@a"), lit(False))),
        # `== null` is IS NULL and `!= null` is IS NOT NULL.
        ("profile@a == null", IsNull(f("profile@a"))),
        ("profile@a != null", IsNull(f("profile@a"), negated=True)),
    ],
)
def test_every_predicate(text: str, expected: Condition) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "profile@traits.plan EXISTS",
        "event@properties.price EXISTS",
        "session@device.os.name EXISTS",
        "profile@stats.visits EXISTS",
        "event@type EXISTS",
        "profile@id EXISTS",
        "profile@traits.first-name_2 EXISTS",
        "profile@" + ".".join(f"s{i}" for i in range(16)) + " EXISTS",
        "profile@123.4 EXISTS",
    ],
)
def test_fields(text: str) -> None:
    condition = parse(text)
    assert isinstance(condition, Exists)
    assert str(condition.field) == text.split()[0]


def test_paths_keep_their_case_and_entities_do_not() -> None:
    assert parse("PROFILE@Traits.Plan EXISTS") == Exists(Field("profile", ("Traits", "Plan")))
    assert parse("Event@type exists") == Exists(Field("event", ("type",)))


# --- precedence -----------------------------------------------------------------------------


def test_and_binds_tighter_than_or() -> None:
    assert parse(f"{A} OR {B} AND {C}") == Or((exists("a"), And((exists("b"), exists("c")))))
    assert parse(f"{A} AND {B} OR {C}") == Or((And((exists("a"), exists("b"))), exists("c")))


def test_not_binds_tighter_than_and() -> None:
    assert parse(f"NOT {A} AND {B}") == And((Not(exists("a")), exists("b")))
    assert parse(f"NOT {A} OR {B}") == Or((Not(exists("a")), exists("b")))
    assert parse(f"NOT NOT {A}") == Not(Not(exists("a")))


def test_parentheses_override_precedence() -> None:
    assert parse(f"({A} OR {B}) AND {C}") == And((Or((exists("a"), exists("b"))), exists("c")))
    assert parse(f"NOT ({A} AND {B})") == Not(And((exists("a"), exists("b"))))
    assert parse(f"(({A}))") == exists("a")


def test_chains_are_left_associative_and_flat() -> None:
    assert parse(f"{A} AND {B} AND {C}") == And((exists("a"), exists("b"), exists("c")))
    assert parse(f"{A} OR {B} OR {C}") == Or((exists("a"), exists("b"), exists("c")))
    # Parentheses keep their grouping: no flattening across them.
    assert parse(f"{A} OR ({B} OR {C})") == Or((exists("a"), Or((exists("b"), exists("c")))))


def test_between_keeps_its_own_and_inside_and_chains() -> None:
    between = Between(f("profile@n"), lit(1), lit(5))
    assert parse(f"{A} AND profile@n BETWEEN 1 AND 5 AND {B}") == And(
        (exists("a"), between, exists("b"))
    )
    assert parse(f"profile@n BETWEEN 1 AND 5 OR {A} AND {B}") == Or(
        (between, And((exists("a"), exists("b"))))
    )
    assert parse("profile@n BETWEEN 1 AND 5 AND profile@m BETWEEN 'a' AND 'b'") == And(
        (between, Between(f("profile@m"), lit("a"), lit("b")))
    )
    assert parse(f"NOT profile@n BETWEEN 1 AND 5 AND {A}") == And((Not(between), exists("a")))


@pytest.mark.parametrize(
    "text",
    [
        "profile@a exists or profile@b is not null and not profile@c between 1 and 2",
        "PROFILE@a EXISTS OR profile@b IS NOT NULL AND NOT profile@c BETWEEN 1 AND 2",
        "Profile@a Exists Or profile@b Is Not Null aNd NoT profile@c BeTwEeN 1 AnD 2",
    ],
)
def test_keywords_are_case_insensitive(text: str) -> None:
    assert parse(text) == Or(
        (
            exists("a"),
            And(
                (
                    IsNull(f("profile@b"), negated=True),
                    Not(Between(f("profile@c"), lit(1), lit(2))),
                )
            ),
        )
    )


def test_more_keywords_in_any_case() -> None:
    assert parse("profile@a starts with 'x'") == StartsWith(f("profile@a"), lit("x"))
    assert parse("profile@a Ends With 'x'") == EndsWith(f("profile@a"), lit("x"))
    assert parse("profile@a contains TRUE") == Contains(f("profile@a"), lit(True))
    assert parse("profile@a in (False)") == In(f("profile@a"), (lit(False),))
    assert parse("profile@a == NULL") == IsNull(f("profile@a"))


def test_whitespace_and_newlines_are_free() -> None:
    assert parse(f"\n  {A}\n\tAND\r\n  {B}  ") == And((exists("a"), exists("b")))


def test_keywords_need_a_word_boundary() -> None:
    with pytest.raises(QuerySyntaxError, match="column 18"):
        parse("profile@a EXISTS ANDprofile@b EXISTS")


# --- literals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ('"plain"', "plain"),
        ("'single'", "single"),
        ('"it\'s"', "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        (r"'it\'s'", "it's"),
        (r'"a\"b"', 'a"b'),
        (r'"back\\slash"', "back\\slash"),
        (r'"\n\r\t\b\f\/"', "\n\r\t\b\f/"),
        (r'"\u00e9t\u00C9"', "étÉ"),
        (r'"\ud83d\ude00"', "😀"),
        ('"😀 raw é"', "😀 raw é"),
        ('""', ""),
        ("''", ""),
        ('"AND OR NOT ( ) =="', "AND OR NOT ( ) =="),
        ('"two\nlines"', "two\nlines"),
    ],
)
def test_strings_and_escapes(source: str, value: str) -> None:
    assert parse(f"profile@a == {source}") == Compare("==", f("profile@a"), lit(value))


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("-7", -7),
        ("-0", 0),
        ("3.25", 3.25),
        ("-0.5", -0.5),
        ("1e3", 1000.0),
        ("-2.5E-3", -0.0025),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("true", True),
        ("FALSE", False),
    ],
)
def test_numbers_and_booleans(source: str, value: float | bool) -> None:
    condition = parse(f"profile@a == {source}")
    assert condition == Compare("==", f("profile@a"), lit(value))
    assert isinstance(condition, Compare)
    assert type(condition.value.value) is type(value)


def test_literals_of_different_types_are_different() -> None:
    assert Literal(1) != Literal(True)
    assert Literal(1) != Literal(1.0)
    assert Literal(0) != Literal(False)
    assert len({Literal(1), Literal(True), Literal(1.0)}) == 3


# --- errors ---------------------------------------------------------------------------------


def error_of(text: str) -> QuerySyntaxError:
    with pytest.raises(QuerySyntaxError) as caught:
        parse(text)
    return caught.value


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        # unbalanced parentheses
        (
            f"({A}",
            1,
            18,
            "unexpected end of the text at line 1, column 18; expected AND, OR or ')'",
        ),
        (f"(({A})", 1, 20, "expected AND, OR or ')'"),
        (f"{A})", 1, 17, "unexpected ')'"),
        (f"{A} AND ()", 1, 23, "unexpected ')'"),
        # dangling operators
        (f"{A} AND", 1, 21, "expected a field, NOT or '('"),
        (f"{A} OR OR {B}", 1, 21, "unexpected 'OR'"),
        (f"AND {A}", 1, 1, "unexpected 'AND'"),
        ("NOT", 1, 4, "expected a field, NOT or '('"),
        ("profile@a ==", 1, 13, "expected a value"),
        ("profile@a BETWEEN 1", 1, 20, "expected AND"),
        ("profile@a BETWEEN 1 OR 2", 1, 21, "unexpected 'OR'"),
        ("profile@a IN ()", 1, 15, "expected a value"),
        ("profile@a IN (1,)", 1, 17, "unexpected ')'"),
        ("profile@a IN (1 2)", 1, 17, "expected ')' or ','"),
        ("profile@a IS", 1, 13, "expected NULL or NOT"),
        ("profile@a STARTS 'x'", 1, 18, "expected WITH"),
        ("profile@a", 1, 10, "expected an operator"),
        ("profile@a = 1", 1, 11, "unexpected '='"),
        (f"{A} {B}", 1, 18, "unexpected 'profile@b'"),
        ("profile@a == 1 'x'", 1, 16, "unexpected string 'x'"),
        ("profile@a == yes", 1, 14, "unexpected 'yes' at line 1, column 14; expected a value"),
        ("profile@a == 1 ; drop", 1, 16, "unexpected ';'"),
        # unknown entity, bad paths
        ("user@a EXISTS", 1, 1, "unknown entity 'user'"),
        (f"{A} AND customer@id EXISTS", 1, 22, "unknown entity 'customer'"),
        ("profile@ EXISTS", 1, 9, "has no path"),
        ("profile@a..b EXISTS", 1, 11, "empty path segment"),
        ("profile@a. EXISTS", 1, 11, "empty path segment"),
        ("profile@.a EXISTS", 1, 9, "empty path segment"),
        ("profile@a.$b EXISTS", 1, 11, "bad path segment '$b'"),
        ("profile@a.b[0] EXISTS", 1, 11, "bad path segment 'b[0]'"),
        ("profile@a.é EXISTS", 1, 11, "bad path segment 'é'"),
        ("profile@" + ".".join("abcdefghijklmnopq") + " EXISTS", 1, 41, "more than 16"),
        ("@a EXISTS", 1, 1, "unexpected '@a'"),
        # strings
        ("profile@a == 'abc", 1, 14, "unterminated string"),
        (f'{A} AND profile@b == "abc', 1, 35, "unterminated string"),
        ("profile@a == 'ab\\'", 1, 14, "unterminated string"),
        ("profile@a == 'a\\qb'", 1, 16, "unknown escape '\\q'"),
        ("profile@a == '\\u12'", 1, 15, "unknown escape '\\u'"),
        ("profile@a == 'x\\ud83d'", 1, 16, "unpaired surrogate"),
        ("profile@a == 'x\\ude00'", 1, 16, "unpaired surrogate"),
        ("profile@a == '\\ud83dx'", 1, 15, "unpaired surrogate"),
        ("profile@a == 'x\ud83d'", 1, 16, "unpaired surrogate"),
        # numbers
        ("profile@a == 9223372036854775808", 1, 14, "does not fit in 64 bits"),
        ("profile@a == 1e999", 1, 14, "too large"),
        ("profile@a == 1.", 1, 15, "unexpected '.'"),
        ("profile@a == - 1", 1, 14, "unexpected '-'"),
        # values that do not fit the operator
        ("profile@a > true", 1, 13, "'>' needs a number or a string"),
        ("profile@a <= null", 1, 14, "use IS NULL"),
        ("profile@a BETWEEN 1 AND 'z'", 1, 25, "two numbers or two strings"),
        ("profile@a BETWEEN null AND 2", 1, 19, "two numbers or two strings"),
        ("profile@a STARTS WITH 1", 1, 23, "STARTS WITH needs a string"),
        ("profile@a ENDS WITH true", 1, 21, "ENDS WITH needs a string"),
        ("profile@a CONTAINS null", 1, 20, "CONTAINS needs"),
        ("profile@a IN ('a', null)", 1, 20, "IN cannot list null"),
        # empty text
        ("", 1, 1, "empty condition at line 1, column 1; expected a field, NOT or '('"),
        ("   \n  ", 1, 1, "empty condition"),
        # lines and columns after newlines
        (f"{A}\nAND\n  AND", 3, 3, "unexpected 'AND'"),
        (f"{A} AND\n  profile@a == 'x", 2, 16, "unterminated string"),
        ("profile@a == 'x\ny\\q'", 2, 2, "unknown escape"),
    ],
)
def test_bad_input_names_line_and_column(text: str, line: int, column: int, words: str) -> None:
    error = error_of(text)
    assert isinstance(error, InvalidPayload)
    assert error.status_code == 422
    assert (error.line, error.column) == (line, column), error.message
    assert f"at line {line}, column {column}" in error.message
    assert words in error.message
    assert error.message.startswith("condition: ")


def test_message_reads_well() -> None:
    assert error_of("profile@a == 1 AND AND profile@b EXISTS").message == (
        "condition: unexpected 'AND' at line 1, column 20; expected a field, NOT or '('"
    )


def test_too_long() -> None:
    text = "profile@a == '" + "x" * MAX_TEXT_LENGTH + "'"
    error = error_of(text)
    assert (error.line, error.column) == (1, MAX_TEXT_LENGTH + 1)
    assert "more than 10,000" in error.message
    # Exactly the limit is fine.
    padded = A + " " * (MAX_TEXT_LENGTH - len(A))
    assert len(padded) == MAX_TEXT_LENGTH
    assert parse(padded) == exists("a")


def test_in_lists_at_most_its_limit_of_values() -> None:
    values = [str(n) for n in range(MAX_IN_VALUES + 100)]
    error = error_of(f"profile@a IN ({', '.join(values)})")
    assert "IN lists 1,100 values, more than 1,000" in error.message
    # The place is the first value past the limit.
    column = len("profile@a IN (") + len(", ".join(values[:MAX_IN_VALUES])) + 3
    assert (error.line, error.column) == (1, column)
    longest = parse(f"profile@a IN ({', '.join(values[:MAX_IN_VALUES])})")
    assert isinstance(longest, In) and len(longest.values) == MAX_IN_VALUES


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert parse("NOT " * MAX_DEPTH + A) is not None
    assert parse("(" * MAX_DEPTH + A + ")" * MAX_DEPTH) == exists("a")
    nested = A
    for _ in range(MAX_DEPTH // 2):  # each turn adds an Or and an And: two levels
        nested = f"{A} AND ({nested} OR {B})"
    assert parse(nested) is not None


@pytest.mark.parametrize(
    ("text", "column"),
    [
        # The error points at the construct that makes the 65th level, counted from inside.
        ("NOT " * (MAX_DEPTH + 1) + A, 1),
        ("NOT " * 70 + A, 4 * (70 - MAX_DEPTH - 1) + 1),
        ("(" * (MAX_DEPTH + 1) + A + ")" * (MAX_DEPTH + 1), 1),
        ("(" * 4000 + A + ")" * 4000, 4000 - MAX_DEPTH),
        ("NOT " * 2400 + A, 4 * (2400 - MAX_DEPTH - 1) + 1),
        # The 65th parenthesis (counted from inside) comes before its NOT is complete.
        ("NOT (" * 1600 + A + ")" * 1600, 5 * (1600 - MAX_DEPTH - 1) + 5),
    ],
)
def test_too_deep_is_a_syntax_error_not_a_recursion_error(text: str, column: int) -> None:
    assert len(text) <= MAX_TEXT_LENGTH
    error = error_of(text)
    assert "nest more than 64 levels" in error.message
    assert (error.line, error.column) == (1, column)


def test_and_or_nesting_counts_too() -> None:
    nested = A
    for _ in range(MAX_DEPTH // 2 + 1):
        nested = f"{A} AND ({nested} OR {B})"
    assert len(nested) <= MAX_TEXT_LENGTH
    assert "nest more than 64 levels" in error_of(nested).message


def test_errors_are_not_cached_as_results_and_results_are_shared() -> None:
    assert parse(A) is parse(A)
    for _ in range(2):
        with pytest.raises(QuerySyntaxError):
            parse("profile@a ==")


# --- round trip -----------------------------------------------------------------------------

segments = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=4)
fields = st.builds(
    Field,
    st.sampled_from(["profile", "event", "session"]),
    st.lists(segments, min_size=1, max_size=16).map(tuple),
)
strings = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
numbers = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
orderable = st.one_of(strings, numbers).map(Literal)
values = st.one_of(strings, numbers, st.booleans()).map(Literal)


@st.composite
def predicates(draw: st.DrawFn) -> Condition:
    field = draw(fields)
    kind = draw(st.integers(0, 8))
    if kind == 0:
        return Compare(draw(st.sampled_from(["==", "!="])), field, draw(values))
    if kind == 1:
        return Compare(draw(st.sampled_from([">", ">=", "<", "<="])), field, draw(orderable))
    if kind == 2:
        low = draw(st.one_of(strings.map(lambda s: (s, s)), numbers.map(lambda n: (n, n))))
        high = draw(strings if isinstance(low[0], str) else numbers)
        return Between(field, Literal(low[0]), Literal(high))
    if kind == 3:
        return Exists(field, draw(st.booleans()))
    if kind == 4:
        return IsNull(field, draw(st.booleans()))
    if kind == 5:
        return Contains(field, draw(values))
    if kind == 6:
        return StartsWith(field, Literal(draw(strings)))
    if kind == 7:
        return EndsWith(field, Literal(draw(strings)))
    return In(field, tuple(draw(st.lists(values, min_size=1, max_size=4))))


conditions = st.recursive(
    predicates(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=4).map(lambda items: And(tuple(items))),
        st.lists(inner, min_size=2, max_size=4).map(lambda items: Or(tuple(items))),
        inner.map(Not),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(conditions)
def test_to_text_parses_back_to_the_same_tree(condition: Condition) -> None:
    assert parse(to_text(condition)) == condition
