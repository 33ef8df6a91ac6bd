"""The condition language shared by profile and event search, workflows and segments.

    condition = parse("profile@traits.plan == 'pro' AND profile@stats.visits >= 3")
    evaluate(condition, {"profile": profile_doc})          # in memory -> bool
    sql, params = to_sqlite(condition, "profile")          # a WHERE fragment over `doc`

The language is described in parser.py, the meaning of each operator in evaluate.py; to_sqlite
gives the same answers as evaluate.
"""

from tessera.query.ast import Condition, Field, to_text
from tessera.query.errors import QuerySyntaxError
from tessera.query.evaluate import evaluate
from tessera.query.parser import MAX_DEPTH, MAX_IN_VALUES, MAX_TEXT_LENGTH, parse
from tessera.query.sqlite import to_sqlite

__all__ = [
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "MAX_TEXT_LENGTH",
    "Condition",
    "Field",
    "QuerySyntaxError",
    "evaluate",
    "parse",
    "to_sqlite",
    "to_text",
]
