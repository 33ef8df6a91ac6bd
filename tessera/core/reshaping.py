"""Reshaping events with templates, and the sandboxed template engine mapping values use too.

A string value containing ``{{`` (or ``{%``) is a template; anything else is copied as it is.

- ``"{{ event.properties.email }}"``: the whole string is one dotted path. It is resolved by
  plain dictionary lookups, without Jinja, and yields the value itself (a number stays a number,
  an object stays an object). A missing path yields None.
- Any other template is Jinja2, run in an ``ImmutableSandboxedEnvironment`` narrowed further:
  expressions only (no ``{% %}`` statements), no globals, a short list of filters and string/dict
  methods, size limits on ``*`` and ``**``, no ``%`` formatting. A string that is exactly one
  ``{{ expression }}`` yields the expression's value; text around it makes the result a string.
- Values are data, never Python objects: inside text an object or a list is written as JSON
  (``Items: [{"sku": "A-1"}]``), true/false as ``true``/``false``, null as nothing; a
  generator or a dict view (``| map``, ``.keys()``) becomes a list. A method named without a
  call (``{{ event.items }}`` when the event has no ``items``) fails like any other template
  error: None and a warning. So no result ever shows a Python repr or a memory address.

Templates are checked when a rule is saved (``check_templates`` raises InvalidPayload); at run
time a template that still fails yields None and a warning, never an exception.
"""

from __future__ import annotations

import functools
import json
import re
import types
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.meta import find_undeclared_variables
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tessera.errors import InvalidPayload
from tessera.model.processing import ReshapeRule

# What a template may read: reshaping sees event and session, mapping values the profile too.
RESHAPE_ROOTS = frozenset({"event", "session"})
MAPPING_ROOTS = frozenset({"event", "session", "profile"})

# A whole-string dotted path: `-` is allowed in keys here (Jinja would read it as a minus).
_PATH = re.compile(r"^\{\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)+|[A-Za-z_][\w-]*)\s*\}\}$")
_SINGLE_EXPRESSION = re.compile(r"^\{\{(.*)\}\}$", re.DOTALL)

# Everything a template may still raise at run time once it passed the save-time check.
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (
    TemplateError,
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    RecursionError,
)

# Filters that compute from their input without a size knob (no `center`, `wordwrap`,
# `format`, `indent`, `replace`: each turns a short template into a huge string).
_FILTERS = (
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "first",
    "float",
    "int",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "reverse",
    "round",
    "sort",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "truncate",
    "unique",
    "upper",
)
# Methods of str, dict and list a template may call; none can build a large value.
_METHODS = frozenset(
    {
        "capitalize",
        "count",
        "endswith",
        "find",
        "get",
        "items",
        "keys",
        "lower",
        "lstrip",
        "rsplit",
        "rstrip",
        "split",
        "startswith",
        "strip",
        "title",
        "upper",
        "values",
    }
)
MAX_SEQUENCE = 100_000  # the longest string or list `*` may build
# Each `~` or `+` in a template can copy an event value once more; a short template keeps the
# worst case a small multiple of the event's own size.
MAX_TEMPLATE_LENGTH = 1_000
MAX_POWER_BITS = 4_096  # the largest integer `**` may build


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Data first: in `event.properties.items` the author means the property "items",
        # not the dict method Jinja would otherwise find before it.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # The stock sandbox answers an undefined value that fails only when used; with
        # chainable undefined values it would never be used, so refuse at once and say why.
        raise SecurityError(f"access to {attribute!r} of {type(obj).__name__!r} is not allowed")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if not (
            isinstance(__obj, types.BuiltinMethodType)
            and isinstance(owner, str | dict | list)
            and __obj.__name__ in _METHODS
        ):
            raise SecurityError(f"calling {getattr(__obj, '__name__', __obj)!r} is not allowed")
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("string formatting with % is not allowed")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(times, int)
                    and len(sequence) * times > MAX_SEQUENCE
                ):
                    raise SecurityError(f"a repeated value longer than {MAX_SEQUENCE} items")
        if (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and max(abs(left).bit_length(), 1) * right > MAX_POWER_BITS
        ):
            raise SecurityError(f"a power larger than {MAX_POWER_BITS} bits")
        return super().call_binop(context, operator, left, right)


class NotData(TemplateError):
    """A template's value is a method or another Python object, not data."""


def as_data(value: Any) -> Any:
    """A template's value as JSON data: dicts with string keys, lists, strings, numbers,
    booleans and None. Iterables Jinja hands out (generators of ``map``, dict views, tuples)
    become lists; anything else (a method named without a call) raises NotData."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Undefined):
        return None
    if isinstance(value, dict):
        return {str(key): as_data(item) for key, item in value.items()}
    if isinstance(
        value, list | tuple | set | frozenset | Iterator | KeysView | ValuesView | ItemsView
    ):
        return [as_data(item) for item in value]
    if callable(value):
        name = getattr(value, "__name__", "?")
        raise NotData(f"{name!r} is a method, not a value (is the field name right?)")
    raise NotData(f"a {type(value).__name__} is not a value a template can give")


def as_text(value: Any) -> str:
    """How a value reads inside text: strings as they are, null as nothing, everything
    else as JSON (true, 3.5, [1, 2], {"a": 1})."""
    data = as_data(value)
    if isinstance(data, str):
        return data
    if data is None:
        return ""
    return json.dumps(data, ensure_ascii=False)


def _sandbox() -> _Sandbox:
    env = _Sandbox(undefined=ChainableUndefined, autoescape=False, finalize=as_text)
    env.globals.clear()  # range, dict, lipsum, cycler, joiner, namespace
    env.filters = {name: env.filters[name] for name in _FILTERS}
    return env


_ENV = _sandbox()


@dataclass(frozen=True, slots=True)
class Template:
    """One compiled template string."""

    source: str
    render: Callable[[Mapping[str, Any]], Any]


def _lookup(path: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Any]:
    def render(scope: Mapping[str, Any]) -> Any:
        return resolve_path(scope, path)

    return render


def resolve_path(document: Any, path: Iterable[str]) -> Any:
    """The value at a dotted path of dictionaries (and list indexes), or None when missing."""
    value = document
    for key in path:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
        if value is None:
            return None
    return value


def _check_tree(tree: nodes.Template, source: str, roots: frozenset[str]) -> None:
    for statement in tree.find_all(nodes.Stmt):
        if not isinstance(statement, nodes.Output):
            raise InvalidPayload(f"template {source!r}: only {{{{ expressions }}}} are allowed")
    for name in find_undeclared_variables(tree):
        if name not in roots:
            allowed = ", ".join(sorted(roots))
            raise InvalidPayload(f"template {source!r}: unknown name {name!r} (use {allowed})")
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        key: Any = None
        if isinstance(node, nodes.Getattr):
            key = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            key = node.arg.value
        if isinstance(key, str) and key.startswith("__"):
            raise InvalidPayload(f"template {source!r}: access to {key!r} is not allowed")
    for constant in tree.find_all(nodes.Const):
        # Filters like map/sort/sum take attribute names as plain strings.
        if isinstance(constant.value, str) and constant.value.startswith("__"):
            raise InvalidPayload(f"template {source!r}: {constant.value!r} is not allowed")
    for call in tree.find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Getattr) and call.node.attr in _METHODS):
            raise InvalidPayload(
                f"template {source!r}: only these methods may be called: "
                + ", ".join(sorted(_METHODS))
            )


@functools.lru_cache(maxsize=4096)
def compile_template(source: str, roots: frozenset[str] = MAPPING_ROOTS) -> Template:
    """Compile once (cached by text); InvalidPayload naming the problem when it is refused."""
    if len(source) > MAX_TEMPLATE_LENGTH:
        raise InvalidPayload(
            f"template {source[:40]!r}…: longer than {MAX_TEMPLATE_LENGTH} characters"
        )
    path = _PATH.match(source)
    if path is not None:
        keys = tuple(path.group(1).split("."))
        if keys[0] not in roots:
            allowed = ", ".join(sorted(roots))
            raise InvalidPayload(f"template {source!r}: unknown name {keys[0]!r} (use {allowed})")
        if any(key.startswith("__") for key in keys):
            raise InvalidPayload(f"template {source!r}: names starting with '__' are not allowed")
        return Template(source, _lookup(keys))
    try:
        tree = _ENV.parse(source)
        _check_tree(tree, source, roots)
        single = _SINGLE_EXPRESSION.match(source)
        if single is not None and "}}" not in single.group(1) and "{{" not in single.group(1):
            expression = _ENV.compile_expression(single.group(1), undefined_to_none=True)
            return Template(source, lambda scope: expression(**scope))
        template = _ENV.from_string(tree)
    except TemplateError as exc:
        raise InvalidPayload(f"template {source!r}: {exc.message or exc}") from exc
    return Template(source, lambda scope: template.render(**scope))


def is_template(value: Any) -> bool:
    # `{%` counts too, so a statement is refused at save time rather than stored as text.
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_templates(value: Any, where: str, roots: frozenset[str] = MAPPING_ROOTS) -> None:
    """Refuse (InvalidPayload) the first template in ``value`` that cannot be compiled."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_templates(item, f"{where}.{key}", roots)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_templates(item, f"{where}[{index}]", roots)
    elif is_template(value):
        try:
            compile_template(value, roots)
        except InvalidPayload as exc:
            raise InvalidPayload(f"{where}: {exc.message}") from exc


def copy_json(value: Any) -> Any:
    """A private copy of nested dicts and lists, so no two records share a mutable part."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def render(
    value: Any,
    scope: Mapping[str, Any],
    warnings: list[str],
    where: str,
    roots: frozenset[str] = MAPPING_ROOTS,
) -> Any:
    """``value`` with every template replaced by its result; a failing one becomes None."""
    if isinstance(value, dict):
        return {
            key: render(item, scope, warnings, f"{where}.{key}", roots)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            render(item, scope, warnings, f"{where}[{index}]", roots)
            for index, item in enumerate(value)
        ]
    if not is_template(value):
        return value
    try:
        result = compile_template(value, roots).render(scope)
    except InvalidPayload as exc:
        warnings.append(f"{where}: {exc.message}")
        return None
    except RUNTIME_ERRORS as exc:
        warnings.append(f"{where}: template {value!r} failed: {exc}")
        return None
    try:
        return as_data(result)
    except NotData as exc:
        warnings.append(f"{where}: template {value!r} failed: {exc}")
        return None


def check_reshape_rule(rule: ReshapeRule) -> None:
    """Called before a rule is saved: InvalidPayload when it does nothing or a template is bad."""
    if rule.properties is None and rule.context is None:
        raise InvalidPayload("a reshaping rule needs 'properties', 'context' or both")
    check_templates(rule.properties, "properties", RESHAPE_ROOTS)
    check_templates(rule.context, "context", RESHAPE_ROOTS)


def reshape(
    event_doc: Mapping[str, Any],
    session_doc: Mapping[str, Any] | None,
    rule: ReshapeRule,
    *,
    warnings: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event's new ``(properties, context)``: a part the rule names is built from its
    templates; a part it leaves None is kept. Failures are added to ``warnings``."""
    problems: list[str] = []
    scope = {"event": event_doc, "session": session_doc or {}}
    properties: dict[str, Any] = (
        dict(event_doc.get("properties") or {})
        if rule.properties is None
        else render(rule.properties, scope, problems, "properties", RESHAPE_ROOTS)
    )
    context: dict[str, Any] = (
        dict(event_doc.get("context") or {})
        if rule.context is None
        else render(rule.context, scope, problems, "context", RESHAPE_ROOTS)
    )
    if warnings is not None:
        warnings.extend(f"reshaping {rule.name!r}: {problem}" for problem in problems)
    return properties, context
