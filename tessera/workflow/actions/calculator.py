"""The ``calculator`` action: arithmetic over values named by dot paths.

    profile@stats.orders * 2 + event@properties.price

The expression is read by Python's own parser (``ast``) after each dot path is replaced by a
placeholder name, then every node of the tree is checked against a short list: numbers, the
operators + - * / // % **, unary + and -, parentheses, and the functions round, abs, min, max.
Anything else (names, attributes, strings, comparisons, other calls) is refused when the
workflow is saved, so nothing but arithmetic is ever run, and the tree is walked by the small
evaluator below, never handed to ``eval``.

Dot path keys here are letters, digits and ``_`` only: a ``-`` is the minus sign.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tessera.errors import InvalidPayload
from tessera.model.bounds import SAFE_INTEGER, out_of_bounds, within
from tessera.workflow.action import (
    MISSING,
    PATH_ROOTS,
    Action,
    ActionConfig,
    ActionContext,
    ActionError,
    ActionResult,
    BoundExceeded,
    Output,
)
from tessera.workflow.actions.traits import check_value_path

MAX_EXPRESSION_LENGTH = 1_000
MAX_DEPTH = 50  # nesting of operators and calls; keeps the evaluator's recursion shallow
MAX_POWER_BITS = 4_096  # the largest integer `**` may build (as in templates)
MAX_EXPONENT = 1_000  # the largest float exponent

_PATH = re.compile(r"\b(" + "|".join(PATH_ROOTS) + r")@(\w+(?:\.\w+)*)?")
_PLACEHOLDER = "_path"

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
# Each function with the numbers of arguments it takes (min/max of one would iterate it).
_FUNCTIONS: dict[str, tuple[Callable[..., Any], range]] = {
    "round": (round, range(1, 3)),
    "abs": (abs, range(1, 2)),
    "min": (min, range(2, 101)),
    "max": (max, range(2, 101)),
}


@dataclass(frozen=True, slots=True)
class Formula:
    """A checked expression: its tree and the dot path behind each placeholder name."""

    source: str
    tree: ast.expr
    paths: dict[str, str]


def compile_formula(source: str) -> Formula:
    """The checked formula; InvalidPayload naming the first thing that is not arithmetic."""
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise InvalidPayload(f"expression: longer than {MAX_EXPRESSION_LENGTH} characters")
    without_paths = _PATH.sub(" ", source)
    if re.search(r"(?<!\w)_", without_paths):
        raise InvalidPayload("expression: names starting with '_' are not allowed")
    if "@" in without_paths:
        roots = ", ".join(f"{root}@" for root in PATH_ROOTS)
        raise InvalidPayload(f"expression: a dot path must start with one of {roots}")
    paths: dict[str, str] = {}

    def placeholder(match: re.Match[str]) -> str:
        name = f"{_PLACEHOLDER}{len(paths)}"
        paths[name] = match.group(0)
        return name

    text = _PATH.sub(placeholder, source)
    try:
        module = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else "too complex"
        raise InvalidPayload(f"expression {_short(source)}: cannot be read ({reason})") from None
    _check(module.body, paths, 0)
    return Formula(source, module.body, paths)


def _check(node: ast.expr, paths: dict[str, str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidPayload(f"expression: nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            raise InvalidPayload(f"expression: {node.value!r} is not a number")
    elif isinstance(node, ast.Name):
        if node.id not in paths:
            raise InvalidPayload(
                f"expression: unknown name {node.id!r} (use numbers, dot paths and "
                + ", ".join(_FUNCTIONS)
                + ")"
            )
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise InvalidPayload(
                f"expression: {_shown(node, paths)} uses an operator that is not allowed"
            )
        _check(node.left, paths, depth + 1)
        _check(node.right, paths, depth + 1)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise InvalidPayload(
                f"expression: {_shown(node, paths)} uses an operator that is not allowed"
            )
        _check(node.operand, paths, depth + 1)
    elif isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCTIONS:
            raise InvalidPayload(
                f"expression: only these functions may be called: {', '.join(_FUNCTIONS)}"
            )
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
            raise InvalidPayload(f"expression: {name}() takes plain arguments only")
        if len(node.args) not in _FUNCTIONS[name][1]:
            allowed = _FUNCTIONS[name][1]
            raise InvalidPayload(
                f"expression: {name}() takes {allowed.start} to {allowed.stop - 1} arguments"
            )
        for arg in node.args:
            _check(arg, paths, depth + 1)
    else:
        raise InvalidPayload(f"expression: {_shown(node, paths)} is not arithmetic")


def _shown(node: ast.AST, paths: dict[str, str]) -> str:
    """The node as the user wrote it (dot paths back in place of placeholders), shortened."""
    text = _PLACEHOLDER_NAMES.sub(lambda match: paths.get(match.group(0), "?"), ast.unparse(node))
    return _short(text)


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


_PLACEHOLDER_NAMES = re.compile(_PLACEHOLDER + r"\d+")


def evaluate_formula(
    formula: Formula, read: Callable[[str], Any], limit: float = SAFE_INTEGER
) -> Number:
    """The formula's value; ``read(path)`` gives each dot path's value. ActionError on a
    missing or non-number value, a division by zero, or a result that is not finite or
    beyond ``limit`` in magnitude (TESSERA_MAX_NUMBER)."""
    values: dict[str, Number] = {}
    for name, path in formula.paths.items():
        value = read(path)
        if value is MISSING or value is None:
            raise ActionError(f"calculator: {path} has no value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ActionError(f"calculator: {path} holds {value!r}, not a number")
        values[name] = value
    try:
        result: Number = _evaluate(formula.tree, values)
        finite = within(result, limit)
    except ZeroDivisionError:
        raise ActionError(f"calculator: division by zero in {_short(formula.source)}") from None
    except OverflowError:
        finite = False
    if not finite:
        raise BoundExceeded(
            f"calculator: {_short(formula.source)} gives a number {out_of_bounds(limit)}"
        )
    return result


def _evaluate(node: ast.expr, values: dict[str, Number]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, values))
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, values)
        right = _evaluate(node.right, values)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, complex):  # (-8) ** 0.5
            raise ActionError(f"calculator: {left!r} ** {right!r} is not a real number")
        return result
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        function = _FUNCTIONS[node.func.id][0]
        args = [_evaluate(arg, values) for arg in node.args]
        if function is round and len(args) == 2:
            if not isinstance(args[1], int):
                raise ActionError("calculator: round()'s digits must be a whole number")
            args[1] = max(-MAX_EXPONENT, min(MAX_EXPONENT, args[1]))
        return function(*args)
    raise AssertionError(f"unchecked node {ast.dump(node)}")  # compile_formula refused it


def _check_power(base: Number, exponent: Number) -> None:
    if isinstance(base, int) and isinstance(exponent, int):
        if exponent > 0 and max(abs(base).bit_length(), 1) * exponent > MAX_POWER_BITS:
            raise ActionError(f"calculator: {base} ** {exponent} is larger than allowed")
    elif abs(exponent) > MAX_EXPONENT:
        raise ActionError(f"calculator: the exponent {exponent!r} is larger than allowed")


class CalculatorConfig(ActionConfig):
    expression: str = Field(
        min_length=1,
        description="Arithmetic over numbers and dot paths, e.g. "
        "'profile@stats.orders * 2 + event@properties.price'. Allowed: + - * / // % **, "
        "parentheses, round, abs, min, max.",
    )
    target: str = Field(
        "payload@result", description="Where the result goes, e.g. profile@stats.score."
    )


class Calculator(Action[CalculatorConfig]):
    name = "calculator"
    title = "Calculate"
    description = "Computes an arithmetic expression over values and writes the number."
    config_model = CalculatorConfig
    outputs = ("payload",)

    def __init__(self, config: CalculatorConfig) -> None:
        super().__init__(config)
        self._formula = compile_formula(config.expression)

    @classmethod
    def check_config(cls, config: CalculatorConfig) -> None:
        compile_formula(config.expression)
        check_value_path(config.target)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        result = evaluate_formula(
            self._formula,
            lambda path: context.read(path, payload),
            context.services.limits.max_number,
        )
        return Output("payload", context.write(self.config.target, result, payload))


ACTIONS = (Calculator,)
