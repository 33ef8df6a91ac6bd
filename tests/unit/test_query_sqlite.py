"""The SQL of to_sqlite, run on a real SQLite table of JSON documents, answers as evaluate does."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.query import MAX_IN_VALUES, QuerySyntaxError, evaluate, parse, to_sqlite
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
    iter_fields,
)
from tests.unit.test_query_evaluate import PROFILE, ROWS


def sqlite_answers(
    condition: Condition, docs: Sequence[dict[str, Any]], *, as_text: bool = False
) -> list[Any]:
    """The fragment's value for each document, in order (as stored by the embedded store)."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("CREATE TABLE docs (n INTEGER PRIMARY KEY, tenant TEXT, doc BLOB)")
        encoded = [msgspec.json.encode(doc) for doc in docs]
        connection.executemany(
            "INSERT INTO docs (n, tenant, doc) VALUES (?, 'default', ?)",
            [(n, data.decode() if as_text else data) for n, data in enumerate(encoded)],
        )
        sql, params = to_sqlite(condition, "profile")
        values = [
            row[0] for row in connection.execute(f"SELECT {sql} FROM docs ORDER BY n", params)
        ]
        # The same fragment as a WHERE clause, after a parameter of the caller's own.
        chosen = {
            row[0]
            for row in connection.execute(
                f"SELECT n FROM docs WHERE tenant = ? AND {sql}", ["default", *params]
            )
        }
        assert chosen == {n for n, value in enumerate(values) if value == 1}
        return values
    finally:
        connection.close()


def python_answers(condition: Condition, docs: Sequence[dict[str, Any]]) -> list[int]:
    # Through JSON and back, as a stored document would be read.
    decoded = [msgspec.json.decode(msgspec.json.encode(doc)) for doc in docs]
    return [int(evaluate(condition, {"profile": doc})) for doc in decoded]


def assert_agree(condition: Condition, docs: Sequence[dict[str, Any]]) -> None:
    expected = python_answers(condition, docs)
    for as_text in (False, True):
        got = sqlite_answers(condition, docs, as_text=as_text)
        assert all(value in (0, 1) for value in got), got  # never NULL: NOT stays two-valued
        assert got == expected, (condition, docs)


# --- the semantics table, in SQL --------------------------------------------------------------

VARIANTS: list[dict[str, Any]] = [
    PROFILE,
    {},
    {"traits": None},
    {"traits": []},
    {"traits": "text"},
    {"traits": dict.fromkeys(PROFILE["traits"], None)},
    {"traits": dict.fromkeys(PROFILE["traits"], True)},
    {"traits": dict.fromkeys(PROFILE["traits"], 0)},
    {"traits": dict.fromkeys(PROFILE["traits"], "")},
    {"traits": {key: [1, "a", None] for key in PROFILE["traits"]}},
    {"traits": {key: {"a": 1} for key in PROFILE["traits"]}},
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for text, expected in ROWS if text.count("@") == text.count("profile@")],
)
def test_every_row_of_the_semantics_table(text: str, expected: bool) -> None:
    condition = parse(text)
    assert sqlite_answers(condition, [PROFILE]) == [int(expected)]
    assert_agree(condition, VARIANTS)


def test_hand_built_conditions_agree() -> None:
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
        Contains(tags, Literal(None)),
        StartsWith(plan, Literal(1)),
        EndsWith(plan, Literal(None)),
        Compare("==", plan, Literal("pro\x00")),
        Compare(">", plan, Literal("pro\x00")),
        Contains(plan, Literal("\x00")),
    ]
    for condition in conditions:
        assert_agree(condition, VARIANTS)


STRINGS = ["", "a", "é", "aé", "éa", "😀", "x😀", "😀x", "a\x00b", "\x00", "A", "ab", "ba", "aa"]


@pytest.mark.parametrize("operator", [StartsWith, EndsWith, Contains])
@pytest.mark.parametrize("needle", ["", "a", "é", "😀", "a\x00", "b", "aé", "x😀"])
def test_affixes_and_substrings_of_non_ascii_text(
    operator: type[StartsWith | EndsWith | Contains], needle: str
) -> None:
    field = Field("profile", ("s",))
    docs = [{"s": text} for text in STRINGS] + [{"s": [text]} for text in STRINGS]
    assert_agree(operator(field, Literal(needle)), docs)


@pytest.mark.parametrize("op", ["==", "!=", ">", ">=", "<", "<="])
@pytest.mark.parametrize("value", ["", "a", "é", "😀", "a\x00", "aa", "A"])
def test_string_order_is_code_point_order(op: CompareOp, value: str) -> None:
    field = Field("profile", ("s",))
    assert_agree(Compare(op, field, Literal(value)), [{"s": text} for text in STRINGS])


@pytest.mark.parametrize("op", ["==", "!=", ">", ">=", "<", "<="])
@pytest.mark.parametrize(
    "value", [0, 1, -1, 1.0, 0.5, 2**53, 2**63 - 1, -(2**63), 1.8446744073709552e19]
)
def test_numbers_mix_integers_and_floats_exactly(op: CompareOp, value: float) -> None:
    field = Field("profile", ("n",))
    numbers: list[Any] = [0, -0.0, 1, 1.0, True, False, "1", 0.5, 2**53, 2**53 + 1, float(2**53)]
    numbers += [2**63 - 1, 2**63, 2**64 + 1, -(2**63), -(2**63) - 1, None, [1], {"n": 1}]
    assert_agree(Compare(op, field, Literal(value)), [{"n": n} for n in numbers])


# --- safety ---------------------------------------------------------------------------------


def test_values_are_parameters_and_paths_are_quoted() -> None:
    condition = parse('profile@traits.plan == "x\'; DROP TABLE docs; --" OR profile@a-b.c_d EXISTS')
    sql, params = to_sqlite(condition, "profile")
    assert "DROP" not in sql
    assert params == ["x'; DROP TABLE docs; --"]
    assert '\'$."a-b"."c_d"\'' in sql
    assert sqlite_answers(condition, [{"a-b": {"c_d": 1}}, {}]) == [1, 0]


def test_fields_of_another_entity_are_refused() -> None:
    with pytest.raises(QuerySyntaxError, match=r"field event@type cannot be used when searching"):
        to_sqlite(parse("profile@id EXISTS AND event@type == 'x'"), "profile")
    with pytest.raises(QuerySyntaxError, match="searching events"):
        to_sqlite(parse("profile@id EXISTS"), "event")
    _, params = to_sqlite(parse("event@type == 'x'"), "event")
    assert params == ["x"]


def test_hand_built_paths_and_literals_are_checked() -> None:
    bad_paths = [(), ("a'; --",), ("a.b",), ("",), tuple("abcdefghijklmnopq")]
    for path in bad_paths:
        with pytest.raises(QuerySyntaxError):
            to_sqlite(Exists(Field("profile", path)), "profile")
    field = Field("profile", ("a",))
    for value in (2**63, -(2**63) - 1, float("inf"), float("nan"), "\ud800"):
        with pytest.raises(QuerySyntaxError):
            to_sqlite(Compare("==", field, Literal(value)), "profile")


@pytest.mark.parametrize("column", ["d.doc", "profiles.doc", "doc", "data_2"])
def test_plain_and_qualified_columns_are_taken(column: str) -> None:
    sql, _ = to_sqlite(parse("profile@a CONTAINS 'x'"), "profile", column)
    assert f"json_type({column}, " in sql


@pytest.mark.parametrize("column", ["doc; DROP", "json", "value", "a.b.c", "", "1doc", '"doc"'])
def test_bad_columns_are_refused(column: str) -> None:
    with pytest.raises(ValueError, match="bad document column"):
        to_sqlite(parse("profile@a EXISTS"), "profile", column)


def test_unknown_entity_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown entity"):
        to_sqlite(parse("profile@a EXISTS"), "profiles")


def test_the_fragment_composes_with_more_sql() -> None:
    # Wrapped in parentheses: an OR inside cannot escape the caller's AND.
    condition = parse("profile@a == 1 OR profile@b == 1")
    sql, params = to_sqlite(condition, "profile")
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE profiles (tenant TEXT, doc BLOB)")
    connection.executemany(
        "INSERT INTO profiles VALUES (?, ?)",
        [("t1", b'{"a": 1}'), ("t2", b'{"a": 1}'), ("t2", b'{"b": 2}')],
    )
    rows = connection.execute(
        f"SELECT tenant FROM profiles WHERE tenant = ? AND {sql}", ["t2", *params]
    ).fetchall()
    assert rows == [("t2",)]


def test_the_longest_in_list_inside_a_long_or_is_within_sqlite_s_depth() -> None:
    # SQLite refuses an expression tree more than 1000 levels deep; a chain of ORs nests one
    # level per term, so the terms are joined as a balanced tree instead.
    values = ", ".join(str(n) for n in range(MAX_IN_VALUES))
    text = " OR ".join(["profile@x==1"] * 300 + [f"profile@n IN ({values})"])
    condition = parse(text)
    docs = [{"n": 999}, {"n": 1000}, {"x": 1}, {"x": 2}]
    assert sqlite_answers(condition, docs) == python_answers(condition, docs) == [1, 0, 1, 0]
    # ANDs are balanced the same way (and keep their parameters in order).
    wide_and = parse(" AND ".join(f"profile@n!={n}" for n in range(500)))
    assert sqlite_answers(wide_and, docs) == python_answers(wide_and, docs) == [1, 1, 0, 0]


# --- property: random documents, random conditions --------------------------------------------

KEYS = ["a", "b", "c-d", "0"]
TEXT = st.text(alphabet='ab\x00é😀"\\\n', max_size=4)
INTS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**53, 2**53 + 1, 2**63 - 1, -(2**63), 10**17 + 1]),
)
DOC_INTS = INTS | st.sampled_from([2**63, 2**64 + 1, -(2**63) - 1, 10**30])
FLOATS = st.one_of(
    st.sampled_from(
        [0.0, -0.0, 0.5, -1.5, 2.0, 3.0, 9007199254740992.0, 1e300, 1.8446744073709552e19]
    ),
    st.floats(allow_nan=False, allow_infinity=False),
)
DOC_SCALARS = st.one_of(st.none(), st.booleans(), DOC_INTS, FLOATS, TEXT)
DOC_VALUES = st.recursive(
    DOC_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=10,
)
DOCS = st.dictionaries(st.sampled_from(KEYS), DOC_VALUES, max_size=4)

LITERALS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT).map(Literal)
FIELDS = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(
    lambda path: Field("profile", tuple(path))
)


def conditions_over(
    fields: st.SearchStrategy[Field], literals: st.SearchStrategy[Literal], max_leaves: int = 6
) -> st.SearchStrategy[Condition]:
    """Random conditions of every kind, on the given fields, with the given literals."""

    @st.composite
    def predicates(draw: st.DrawFn) -> Condition:
        field = draw(fields)
        kind = draw(
            st.sampled_from(["compare", "between", "exists", "null", "in", "contains", "affix"])
        )
        if kind == "compare":
            op: CompareOp = draw(st.sampled_from(["==", "!=", ">", ">=", "<", "<="]))
            return Compare(op, field, draw(literals))
        if kind == "between":
            return Between(field, draw(literals), draw(literals))
        if kind == "exists":
            return Exists(field, draw(st.booleans()))
        if kind == "null":
            return IsNull(field, draw(st.booleans()))
        if kind == "in":
            return In(field, tuple(draw(st.lists(literals, max_size=3))))
        if kind == "contains":
            return Contains(field, draw(literals))
        value = draw(literals | TEXT.map(Literal))
        return StartsWith(field, value) if draw(st.booleans()) else EndsWith(field, value)

    return st.recursive(
        predicates(),
        lambda inner: st.one_of(
            st.lists(inner, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
            st.lists(inner, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
            inner.map(Not),
        ),
        max_leaves=max_leaves,
    )


CONDITIONS = conditions_over(FIELDS, LITERALS)


def document_at(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A document holding `value` at `path` and nothing else."""
    document: dict[str, Any] = {}
    node = document
    for segment in path[:-1]:
        node = node.setdefault(segment, {})
    node[path[-1]] = value
    return document


def neighbours(value: Any) -> list[Any]:
    """Values a translation could confuse with `value`: its other spellings and near misses."""
    out: list[Any] = [value, None]
    if isinstance(value, bool):
        out += [int(value), float(value), str(value).lower(), not value]
    elif isinstance(value, int | float):
        out += [float(value), str(value), value + 1, value - 1, value == 1, -value]
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            out.append(int(value))
    elif isinstance(value, str):
        out += [value + "\x00x", value[:-1], value[1:], value + "a", "a" + value, "", value.upper()]
        out += [1, True]
    return out


@settings(max_examples=300, deadline=None)
@given(condition=CONDITIONS, docs=st.lists(DOCS, min_size=1, max_size=6))
def test_sql_and_evaluate_agree_on_random_documents(
    condition: Condition, docs: list[dict[str, Any]]
) -> None:
    # Random documents rarely hold the condition's literals at its paths, so add documents that
    # do: at each path, each literal and each value close to one (see neighbours), alone and in
    # a list, so that every predicate is often true and often narrowly false.
    near = {
        (type(value), repr(value)): value
        for node in _literals(condition)
        for literal in node
        for value in neighbours(literal.value)
    }
    for field in iter_fields(condition):
        for value in [*near.values(), *([value] for value in near.values()), list(near.values())]:
            docs.append(document_at(field.path, value))
    assert_agree(condition, docs)


def _literals(condition: Condition) -> Iterator[tuple[Literal, ...]]:
    stack = [condition]
    while stack:
        node = stack.pop()
        if isinstance(node, And | Or):
            stack.extend(node.items)
        elif isinstance(node, Not):
            stack.append(node.item)
        elif isinstance(node, In):
            yield node.values
        elif isinstance(node, Between):
            yield (node.low, node.high)
        elif isinstance(node, Exists | IsNull):
            continue
        else:
            yield (node.value,)
