"""Mapping event values onto the profile document.

``apply_mappings`` works on the plain profile document (``msgspec.to_builtins(profile)``) the
ingest path converts back into a ``Profile`` afterwards, so it must never leave anything there
that conversion refuses: ``stats`` and ``interests`` only ever receive numbers, one level deep.

Only these parts of a profile can be written: ``traits``, ``data``, ``consents``, ``interests``
and ``stats``. Its ``id``, ``ids``, ``metadata``, ``segments`` and ``active`` belong to Tessera
(identity, merging, segmentation), and a rule that names them is refused when saved.

The operations (``FieldMapping.op``), with ``v`` the mapping's value (see FieldMapping):

- ``equals``: set the path to ``v``. A missing ``v`` changes nothing.
- ``equals_if_not_exists``: set it only when the path is missing or null.
- ``append``: add ``v`` (each item, if a list) to the list at the path unless an equal item is
  there already; a single value found there becomes the list's first item. The newest
  ``MAX_LIST_ITEMS`` items are kept.
- ``increment``: add ``v`` when it is a number (or a numeric string); else the mapping's
  constant ``value`` when that is a number; else 1. Adding 0 changes nothing. A path holding
  something other than a number is left alone with a warning.
- ``delete``: remove the path; a missing path is no change.
- ``merge``: deep-merge the object ``v`` into the object at the path (``traits`` itself may be
  the path): objects are merged key by key, anything else is replaced.

Intermediate objects are created as needed; a path that runs into a non-object value (``data.a``
is a string and the path is ``data.a.b``) is left alone with a warning.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tessera.core.reshaping import (
    MAPPING_ROOTS,
    check_templates,
    copy_json,
    is_template,
    render,
    resolve_path,
)
from tessera.errors import InvalidPayload
from tessera.model.bounds import (
    DEFAULT_LIMITS,
    ProfileBudget,
    all_finite,
    bounded_sum,
    out_of_bounds,
    within,
)
from tessera.model.processing import MAPPING_OPS, FieldMapping, MappingRule
from tessera.query import evaluate, parse

WRITABLE_ROOTS = ("traits", "data", "consents", "interests", "stats")
# dict[str, number] in the Profile model: one key below the root, numbers only.
NUMERIC_ROOTS = frozenset({"interests", "stats"})
MERGEABLE_ROOTS = frozenset({"traits", "data", "consents"})
# The top-level keys of an event document; an event path starts with one of them.
EVENT_KEYS = frozenset(
    {
        "id",
        "type",
        "time",
        "source",
        "session",
        "profile",
        "properties",
        "context",
        "options",
        "tags",
        "request",
        "metadata",
    }
)
MAX_LIST_ITEMS = 1000
MAX_PATH_SEGMENTS = 16

_KEY = re.compile(r"^[\w-]{1,128}$")
_PLACEHOLDER = re.compile(r"^\{([\w-]+(?:\.[\w-]+)*)\}$")
_SEGMENTS = re.compile(r"\.(\{[^{}]*\}|[^.{}]*)")

# (condition text, {"event": …, "profile": …, "session": …}) -> whether the rule applies.
ConditionHolds = Callable[[str, Mapping[str, Mapping[str, Any]]], bool]


def query_condition(text: str, records: Mapping[str, Mapping[str, Any]]) -> bool:
    """Tessera's condition language; ``parse`` caches parsed conditions by text."""
    return evaluate(parse(text), records)


def check_condition(text: str) -> None:
    """InvalidPayload (QuerySyntaxError) saying where a condition cannot be read."""
    parse(text)


@dataclass(frozen=True, slots=True)
class _Placeholder:
    """A profile path segment filled from the event: ``{properties.type}``."""

    path: tuple[str, ...]


Segment = str | _Placeholder


@functools.lru_cache(maxsize=4096)
def parse_profile_path(text: str) -> tuple[Segment, ...]:
    """The segments of a profile path, root first; InvalidPayload saying what is wrong."""
    root, _, rest = text.partition(".")
    if root not in WRITABLE_ROOTS:
        raise InvalidPayload(
            f"profile path {text!r} is not writable: it must start with one of "
            + ", ".join(f"'{name}.'" for name in WRITABLE_ROOTS)
        )
    segments: list[Segment] = [root]
    if rest or text.endswith("."):
        parts = _SEGMENTS.findall("." + rest)
        if "".join(f".{part}" for part in parts) != "." + rest:
            raise InvalidPayload(f"profile path {text!r} cannot be read")
        for part in parts:
            placeholder = _PLACEHOLDER.match(part)
            if placeholder is not None:
                event_path = tuple(placeholder.group(1).split("."))
                _check_event_path(event_path, text)
                segments.append(_Placeholder(event_path))
            elif _KEY.match(part) and not part.startswith("__"):
                segments.append(part)
            else:
                raise InvalidPayload(
                    f"profile path {text!r}: {part!r} is not a key (letters, digits, '_', '-')"
                )
    if len(segments) > MAX_PATH_SEGMENTS:
        raise InvalidPayload(f"profile path {text!r} is deeper than {MAX_PATH_SEGMENTS} keys")
    return tuple(segments)


def _check_event_path(path: tuple[str, ...], where: str) -> None:
    if path[0] not in EVENT_KEYS:
        raise InvalidPayload(
            f"event path {'.'.join(path)!r} in {where!r} must start with one of "
            + ", ".join(sorted(EVENT_KEYS))
            + " (it is read from the event, without an 'event.' prefix)"
        )
    if any(not key or key.startswith("__") for key in path):
        raise InvalidPayload(f"event path {'.'.join(path)!r} in {where!r} cannot be read")


def _event_paths(mapping: FieldMapping) -> list[str]:
    if mapping.event is None:
        return []
    return [mapping.event] if isinstance(mapping.event, str) else list(mapping.event)


def _check_mapping(mapping: FieldMapping) -> None:
    if mapping.op not in MAPPING_OPS:
        raise InvalidPayload(f"op {mapping.op!r} is not one of {', '.join(MAPPING_OPS)}")
    segments = parse_profile_path(mapping.profile)
    root = segments[0]
    if len(segments) == 1 and mapping.op != "merge":
        raise InvalidPayload(f"{mapping.op!r} needs a path below {root!r}, e.g. '{root}.name'")
    if mapping.op == "merge" and root not in MERGEABLE_ROOTS:
        raise InvalidPayload(f"'merge' works under traits, data and consents, not {root!r}")
    if root in NUMERIC_ROOTS:
        if len(segments) != 2:
            raise InvalidPayload(f"{root!r} holds numbers one level deep: use '{root}.<name>'")
        if mapping.op == "append":
            raise InvalidPayload(f"{root!r} holds numbers; 'append' cannot write there")
        constant = mapping.value
        if constant is not None and not is_template(constant) and _number(constant) is None:
            raise InvalidPayload(f"{root!r} holds numbers; {constant!r} is not one")
    for path in _event_paths(mapping):
        _check_event_path(tuple(path.split(".")), mapping.profile)
    if (
        mapping.op in ("equals", "equals_if_not_exists", "append", "merge")
        and not _event_paths(mapping)
        and mapping.value is None
    ):
        raise InvalidPayload(f"{mapping.op!r} needs 'event' (a path in the event) or 'value'")
    check_templates(mapping.value, "value", MAPPING_ROOTS)


def check_mapping_rule(
    rule: MappingRule, check_condition: Callable[[str], None] = check_condition
) -> None:
    """Called before a rule is saved: InvalidPayload naming the first mapping that is refused."""
    if not rule.mappings:
        raise InvalidPayload("a mapping rule needs at least one mapping")
    for index, mapping in enumerate(rule.mappings):
        try:
            _check_mapping(mapping)
        except InvalidPayload as exc:
            raise InvalidPayload(f"mappings[{index}] ({mapping.profile!r}): {exc.message}") from exc
    if rule.condition is not None:
        check_condition(rule.condition)


def _number(value: Any) -> int | float | None:
    """A finite number, from a number or a numeric string; booleans are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            parsed = float(text)
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def _same(left: Any, right: Any) -> bool:
    # 1 == 1.0 == True in Python; a profile value that changes type did change.
    return type(left) is type(right) and bool(left == right)


class _Run:
    """One call of apply_mappings: the documents, and what changed and went wrong."""

    def __init__(
        self,
        event: Mapping[str, Any],
        profile: dict[str, Any],
        session: Mapping[str, Any],
        budget: ProfileBudget,
    ) -> None:
        self.event = event
        self.profile = profile
        self.scope = {"event": event, "profile": profile, "session": session}
        self.budget = budget
        self.changed: dict[str, None] = {}  # an ordered set
        self.warnings: list[str] = []

    def keys(self, mapping: FieldMapping, where: str) -> list[str] | None:
        """The concrete profile keys of a mapping, its placeholders filled from the event."""
        try:
            segments = parse_profile_path(mapping.profile)
        except InvalidPayload as exc:
            self.warnings.append(f"{where}: {exc.message}")
            return None
        keys: list[str] = []
        for segment in segments:
            if isinstance(segment, str):
                keys.append(segment)
                continue
            value = resolve_path(self.event, segment.path)
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not _KEY.match(value) or value.startswith("__"):
                self.warnings.append(
                    f"{where}: event value {'.'.join(segment.path)!r} is missing or not a key "
                    "(letters, digits, '_', '-')"
                )
                return None
            keys.append(value)
        return keys

    def value(self, mapping: FieldMapping, where: str) -> Any:
        for path in _event_paths(mapping):
            found = resolve_path(self.event, path.split("."))
            if found is not None:
                return found
        if mapping.value is None:
            return None
        return render(mapping.value, self.scope, self.warnings, f"{where}.value")

    def parent(self, keys: list[str], create: bool, where: str) -> dict[str, Any] | None:
        """The object holding the last key; intermediate objects made when ``create``."""
        node: Any = self.profile
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                if not create:
                    return None
                child = node[key] = {}
            elif not isinstance(child, dict):
                self.warnings.append(
                    f"{where}: {'.'.join(keys[: depth + 1])} holds a {type(child).__name__}, "
                    f"not an object; {'.'.join(keys)} cannot be written"
                )
                return None
            node = child
        return node if isinstance(node, dict) else None

    def peek(self, keys: list[str]) -> Any:
        """The value at ``keys``, or None; nothing is made and nothing warned about."""
        node: Any = self.profile
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node

    def write(self, keys: list[str], value: Any, where: str) -> bool:
        """Set the value at ``keys`` unless that breaks a bound (then a warning says which);
        True when it was written."""
        if not all_finite(value):
            self.warnings.append(f"{where}: {'.'.join(keys)}: a number is not finite; not written")
            return False
        reason = self.budget.allows(self.profile, keys, value)
        if reason is not None:
            self.warnings.append(f"{where}: {'.'.join(keys)} was not written: {reason}")
            return False
        parent = self.parent(keys, create=True, where=where)
        if parent is None:
            return False
        parent[keys[-1]] = value
        self.mark(".".join(keys))
        return True

    def mark(self, path: str) -> None:
        self.changed[path] = None


def _shown(value: Any, limit: int = 60) -> str:
    """A value in a warning, cut short: warnings travel back in the /track answer."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _numeric(run: _Run, keys: list[str], value: Any, where: str) -> Any:
    """``value`` as a root of numbers holds it, or None (with a warning) when it cannot be."""
    number = _number(value)
    if number is None:
        run.warnings.append(f"{where}: {keys[0]} holds numbers; {_shown(value)} was not written")
    elif not within(number, run.budget.limits.max_number):
        run.warnings.append(
            f"{where}: {'.'.join(keys)}: {_shown(value)} is "
            f"{out_of_bounds(run.budget.limits.max_number)}; not written"
        )
        return None
    return number


def _equals(run: _Run, keys: list[str], value: Any, where: str, only_if_missing: bool) -> None:
    if value is None:
        return
    if keys[0] in NUMERIC_ROOTS:
        value = _numeric(run, keys, value, where)
        if value is None:
            return
    current = run.peek(keys)
    if (only_if_missing and current is not None) or _same(current, value):
        return
    run.write(keys, copy_json(value), where)


def _append(run: _Run, keys: list[str], value: Any, where: str) -> None:
    if value is None:
        return
    current = run.peek(keys)
    if isinstance(current, dict):
        run.warnings.append(f"{where}: {'.'.join(keys)} is an object; nothing was appended")
        return
    items: list[Any] = (
        list(current) if isinstance(current, list) else [] if current is None else [current]
    )
    added = False
    for item in value if isinstance(value, list) else [value]:
        if item is not None and not any(_same(item, present) for present in items):
            items.append(copy_json(item))
            added = True
    if not added and (current is None or isinstance(current, list)):
        return
    if len(items) > MAX_LIST_ITEMS:
        run.warnings.append(f"{where}: {'.'.join(keys)} keeps its newest {MAX_LIST_ITEMS} items")
        del items[: len(items) - MAX_LIST_ITEMS]
    run.write(keys, items, where)


def _increment(run: _Run, keys: list[str], value: Any, fallback: Any, where: str) -> None:
    amount = _number(value)
    if amount is None:
        amount = _number(fallback)
    if amount is None:
        amount = 1
    if amount == 0:
        return
    current = run.peek(keys)
    if current is None:
        current = 0
    elif _number(current) is None or isinstance(current, str):
        run.warnings.append(
            f"{where}: {'.'.join(keys)} holds {_shown(current)}, not a number; "
            "it was not incremented"
        )
        return
    limit = run.budget.limits.max_number
    total = bounded_sum(current, amount, limit)
    if total is None:
        run.warnings.append(
            f"{where}: {'.'.join(keys)}: {_shown(current)} + {_shown(amount)} is "
            f"{out_of_bounds(limit)}; it stays {_shown(current)}"
        )
        return
    run.write(keys, total, where)


def _delete(run: _Run, keys: list[str], where: str) -> None:
    parent = run.parent(keys, create=False, where=where)
    if parent is not None and keys[-1] in parent:
        del parent[keys[-1]]
        run.mark(".".join(keys))


def _merge_into(
    run: _Run, keys: list[str], target: dict[str, Any], value: dict[str, Any], where: str
) -> None:
    for key, item in value.items():
        here = [*keys, key]
        current = target.get(key)
        if isinstance(item, dict) and isinstance(current, dict):
            _merge_into(run, here, current, item, where)
        elif not _same(current, item) or key not in target:
            run.write(here, copy_json(item), where)


def _merge(run: _Run, keys: list[str], value: Any, where: str) -> None:
    if value is None or value == {}:
        return
    if not isinstance(value, dict):
        run.warnings.append(f"{where}: 'merge' needs an object, got {type(value).__name__}")
        return
    target = run.peek(keys)
    if target is None:
        if not run.write(keys, {}, where):
            return
        target = run.peek(keys)
    if not isinstance(target, dict):
        run.warnings.append(f"{where}: {'.'.join(keys)} is not an object; nothing was merged")
        return
    _merge_into(run, keys, target, value, where)


def _apply(run: _Run, mapping: FieldMapping, where: str) -> None:
    keys = run.keys(mapping, where)
    if keys is None:
        return
    if mapping.op == "delete":
        _delete(run, keys, where)
        return
    if mapping.op == "increment":
        # The event value is the amount; the constant `value` only stands in when the event
        # has no numeric one (so `value: 0` means "add nothing without an amount").
        found = None
        for path in _event_paths(mapping):
            found = resolve_path(run.event, path.split("."))
            if found is not None:
                break
        fallback = (
            render(mapping.value, run.scope, run.warnings, f"{where}.value")
            if mapping.value is not None
            else None
        )
        _increment(run, keys, found, fallback, where)
        return
    value = run.value(mapping, where)
    if mapping.op in ("equals", "equals_if_not_exists"):
        _equals(run, keys, value, where, only_if_missing=mapping.op == "equals_if_not_exists")
    elif mapping.op == "append":
        _append(run, keys, value, where)
    elif mapping.op == "merge":
        _merge(run, keys, value, where)


def apply_mappings(
    event_doc: Mapping[str, Any],
    profile_doc: dict[str, Any],
    rules: Iterable[MappingRule],
    *,
    session_doc: Mapping[str, Any] | None = None,
    condition_holds: ConditionHolds = query_condition,
    warnings: list[str] | None = None,
    budget: ProfileBudget | None = None,
) -> list[str]:
    """Apply every enabled rule, in order, to ``profile_doc`` (changed in place); return the
    profile paths that changed, in the order they first changed. Nothing here raises for bad
    data: a mapping that cannot be applied is skipped and says why in ``warnings``, and so
    is a change that would break a bound of ``budget`` (model/bounds.py: numbers, size)."""
    run = _Run(
        event_doc,
        profile_doc,
        session_doc or {},
        budget or ProfileBudget(profile_doc, DEFAULT_LIMITS),
    )
    for rule in rules:
        if not rule.enabled:
            continue
        if rule.condition is not None:
            try:
                holds = condition_holds(rule.condition, run.scope)
            except InvalidPayload as exc:
                run.warnings.append(f"mapping {rule.name!r}: skipped: {exc.message}")
                continue
            if not holds:
                continue
        for index, mapping in enumerate(rule.mappings):
            _apply(run, mapping, f"mapping {rule.name!r} mappings[{index}] ({mapping.profile})")
    if warnings is not None:
        warnings.extend(run.warnings)
    return list(run.changed)
