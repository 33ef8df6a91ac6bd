"""Validating events against JSON Schemas (fastjsonschema).

A schema applies to the whole event document (``type``, ``time``, ``properties``, ``context``,
``options``, ``tags``, ``source``, ``session``, ``profile``, ``request``, ``metadata``). It is
compiled to Python once and the compiled function kept under the rule's
``(tenant, id, version, created)``: every change of a rule raises its version, and a rule
deleted and created again under the same id (version 1 again) has a new creation time, so an
old compiled schema is never used for a changed rule. fastjsonschema stops at a schema's first
error, so each failing rule contributes one message.

Patterns (``pattern``, ``patternProperties``) are bounded like every user's regular expression
(core/patterns.py): their size when a rule is saved, their time when events are checked.
fastjsonschema compiles them with ``re``, which has no time limit, so each compiled validator's
patterns are swapped for the ``regex`` package's with the request's budget, and a validator
that has any runs in a thread: a pattern that backtracks for ever neither stalls the event
loop nor takes longer than the request's budget (the event is then marked invalid, saying so).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import regex

from tessera.core.patterns import RegexTimeout, TimedPattern, check_pattern
from tessera.errors import InvalidPayload
from tessera.model.processing import ValidationRule

log = logging.getLogger(__name__)

Validator = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    validate: Validator
    # Whether it runs regular expressions (then it runs in a thread, see the module doc).
    has_patterns: bool


# Compiled schemas; a few hundred rules at most in practice, so the bound only guards memory
# against a pathological number of edits (each edit is a new version).
MAX_COMPILED = 2048
_compiled: dict[tuple[str, str, int, float], CompiledSchema | None] = {}

# fastjsonschema fetches a remote `$ref` with urlopen while compiling: from a server, that is a
# request to any address an admin types (SSRF). Only refs inside the schema (`#...`) are
# accepted, and every fetch is refused should one slip through.
_REMOTE_SCHEMES = ("http", "https", "ftp", "file", "data", "urn", "")


def _no_fetch(uri: str) -> Any:
    raise InvalidPayload(f"schema references {uri!r}: only references within the schema work")


_HANDLERS: dict[str, Callable[[str], Any]] = dict.fromkeys(_REMOTE_SCHEMES, _no_fetch)

# What compiling an arbitrary schema can raise besides its own definition error (a bad
# `pattern` is an re.error, a list where an object belongs an AttributeError …).
_COMPILE_ERRORS: tuple[type[BaseException], ...] = (
    fastjsonschema.JsonSchemaDefinitionException,
    re.error,
    AttributeError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    RecursionError,
)


def _remote_refs(schema: Any) -> Iterable[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                yield value
            else:
                yield from _remote_refs(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _remote_refs(item)


def _patterns(schema: Any) -> Iterable[str]:
    """Every regular expression of a schema: ``pattern`` values, ``patternProperties`` keys."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            elif key == "patternProperties" and isinstance(value, dict):
                yield from (name for name in value if isinstance(name, str))
            yield from _patterns(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _patterns(item)


def _timed(validator: Validator) -> CompiledSchema:
    """The validator with its ``re`` patterns swapped for time-bounded ``regex`` ones."""
    patterns: dict[str, Any] | None = getattr(validator, "__globals__", {}).get("REGEX_PATTERNS")
    if not patterns:
        return CompiledSchema(validator, has_patterns=False)
    for name, compiled in list(patterns.items()):
        try:
            patterns[name] = TimedPattern(regex.compile(compiled.pattern, regex.VERSION0))
        except regex.error as exc:
            raise InvalidPayload(f"json_schema: pattern {name[:80]!r}: {exc}") from None
    return CompiledSchema(validator, has_patterns=True)


def compile_schema(schema: Mapping[str, Any]) -> CompiledSchema:
    """The schema's validator; InvalidPayload with the reason when it cannot be one."""
    if not isinstance(schema, dict):
        raise InvalidPayload("json_schema must be a JSON object")
    for pattern in _patterns(schema):
        check_pattern(pattern, "json_schema pattern")
    ref = next(iter(_remote_refs(schema)), None)
    if ref is not None:
        raise InvalidPayload(
            f"json_schema: $ref {ref!r} is not allowed; only references within the schema "
            "('#/...') work"
        )
    try:
        # use_default=False: a schema's "default" must not write into the event it checks.
        validator: Validator = fastjsonschema.compile(schema, handlers=_HANDLERS, use_default=False)
    except InvalidPayload:
        raise
    except _COMPILE_ERRORS as exc:
        raise InvalidPayload(f"json_schema is not a valid JSON Schema: {exc}") from exc
    return _timed(validator)


def check_validation_rule(rule: ValidationRule) -> None:
    """Called before a rule is saved: InvalidPayload when its schema cannot be compiled."""
    compile_schema(rule.json_schema)


def _validator(rule: ValidationRule) -> CompiledSchema | None:
    key = (rule.tenant, rule.id, rule.version, rule.created.timestamp())
    if key in _compiled:
        return _compiled[key]
    try:
        validator: CompiledSchema | None = compile_schema(rule.json_schema)
    except InvalidPayload as exc:
        # Checked when saved, so only a rule stored by other means (or a library upgrade)
        # gets here; the rule is skipped rather than failing every event of its type.
        log.warning("validation rule %r is skipped: %s", rule.id, exc.message)
        validator = None
    if len(_compiled) >= MAX_COMPILED:
        _compiled.clear()
    _compiled[key] = validator
    return validator


def _readable(error: fastjsonschema.JsonSchemaValueException) -> str:
    # fastjsonschema names the checked value "data"; here it is the event.
    message = str(error.message)
    if message == "data" or message.startswith(("data.", "data[", "data ")):
        return "event" + message[4:]
    return message


async def validate_event(
    event_doc: Mapping[str, Any], rules: Iterable[ValidationRule]
) -> list[str]:
    """One message per rule the event breaks, e.g.
    ``"rule 'Needs e-mail': event.properties.email must be string"``; empty when it is valid.
    Rules with patterns run in a thread, within the request's regular expression budget."""
    checks = [(rule, compiled) for rule in rules if (compiled := _validator(rule)) is not None]
    if any(compiled.has_patterns for _rule, compiled in checks):
        return await asyncio.to_thread(_check_all, event_doc, checks)
    return _check_all(event_doc, checks)


def _check_all(
    event_doc: Mapping[str, Any], checks: list[tuple[ValidationRule, CompiledSchema]]
) -> list[str]:
    errors: list[str] = []
    for rule, compiled in checks:
        try:
            compiled.validate(event_doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            errors.append(f"rule {rule.name!r}: {_readable(exc)}")
        except RegexTimeout as exc:
            errors.append(f"rule {rule.name!r}: the event could not be checked: {exc}")
            break  # the budget is spent: the other rules could not run either
        except (TypeError, ValueError, RecursionError) as exc:
            errors.append(f"rule {rule.name!r}: the event could not be checked: {exc}")
    return errors
