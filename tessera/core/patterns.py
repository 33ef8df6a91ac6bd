"""Regular expressions from users, bounded in size and in time (docs/security.md, "Bounds").

Users save patterns in validation rules (JSON Schema ``pattern``, ``patternProperties``) and in
workflows (``regex_match``), and the server then runs them against text any client sends.
Two things can go wrong, and both are bounded here:

- **Compiling.** The ``regex`` package expands counted repetitions: ``a{8000000}`` takes
  seconds and more than a gigabyte to compile. ``check_pattern`` refuses, before anything is
  compiled, a pattern longer than ``TESSERA_REGEX_MAX_LENGTH``, a count above
  ``TESSERA_REGEX_MAX_REPEAT``, or one whose counts multiplied through nested groups would
  expand it past 100 times that. ``compile_checked`` runs the compile in a thread and gives up
  after ``COMPILE_TIMEOUT_S`` (the size bounds keep it near 50 ms at worst).
- **Matching.** A pattern with nested repetition takes exponential time on a crafted text
  (``^(a+)+$`` against ``aaaa…b``). Every match runs with the ``regex`` package's timeout, out of
  one per-request budget (``TESSERA_REGEX_BUDGET_SECONDS``, a ``RegexBudget`` in a context
  variable), and with ``concurrent=True`` so that a thread running a long match leaves the
  GIL to the event loop. ``search`` tries a match on the event loop for at most
  ``INLINE_S`` and finishes a slow one in a thread, so the usual microsecond match costs no
  thread hop and a slow one never stalls the server.

The bounds are settings, read where no runtime is at hand (a pydantic validator, an action's
class method), so ``configure`` sets them once at start (``build_runtime``); the defaults are
those of the settings.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import regex

from tessera.errors import InvalidPayload

# How long a compile may take in its thread before the save is refused.
COMPILE_TIMEOUT_S: Final = 2.0
# How long a match may run on the event loop before it moves to a thread.
INLINE_S: Final = 0.002
# The whole pattern may expand to this many times TESSERA_REGEX_MAX_REPEAT.
EXPANSION_FACTOR: Final = 100


@dataclass(frozen=True, slots=True)
class PatternLimits:
    max_length: int = 1000
    max_repeat: int = 1000
    budget_s: float = 0.5


_limits = PatternLimits()


def configure(limits: PatternLimits) -> None:
    """Set the installation's bounds (from settings, at start)."""
    global _limits
    _limits = limits


def limits() -> PatternLimits:
    return _limits


class RegexTimeout(Exception):
    """The request's time for regular expressions ran out."""


# --- Size, before compiling ------------------------------------------------------------------

_COUNT = regex.compile(r"\{(\d*)(?:,(\d*))?\}")


def check_pattern(pattern: str, where: str = "pattern") -> None:
    """InvalidPayload naming the problem when ``pattern`` is too long or repeats too much."""
    bounds = _limits
    if len(pattern) > bounds.max_length:
        raise InvalidPayload(
            f"{where}: {len(pattern)} characters, more than {bounds.max_length} "
            "(TESSERA_REGEX_MAX_LENGTH)"
        )
    expansion = _expansion(pattern, bounds.max_repeat, where)
    ceiling = EXPANSION_FACTOR * bounds.max_repeat
    if expansion > ceiling:
        raise InvalidPayload(
            f"{where}: its repetitions multiply to about {expansion:,} pattern items, more "
            f"than {ceiling:,} ({EXPANSION_FACTOR} times TESSERA_REGEX_MAX_REPEAT)"
        )


def _expansion(pattern: str, max_repeat: int, where: str) -> int:
    """About how many items the pattern expands to: each counted repetition multiplies the
    item or group before it. An estimate (escapes and classes count one), enough to tell a
    pattern that compiles in milliseconds from one that takes seconds."""
    sums = [0]  # the running total of each open group, innermost last
    last = 0  # size of the item a quantifier would apply to
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            last = 1
            sums[-1] += 1
            continue
        if char == "[":
            index = _class_end(pattern, index)
            last = 1
            sums[-1] += 1
            continue
        if char == "(":
            sums.append(0)
        elif char == ")" and len(sums) > 1:
            last = sums.pop()
            sums[-1] += last
        elif char == "{" and (count := _COUNT.match(pattern, index)) is not None:
            numbers = [int(text) for text in count.groups() if text]
            if any(number > max_repeat for number in numbers):
                raise InvalidPayload(
                    f"{where}: the repetition {count.group(0)} counts past {max_repeat} "
                    "(TESSERA_REGEX_MAX_REPEAT)"
                )
            times = max(numbers, default=1)
            sums[-1] += last * (times - 1)
            last *= times
            index = count.end()
            continue
        elif char not in "*+?|":
            last = 1
            sums[-1] += 1
        index += 1
    return sum(sums)


def _class_end(pattern: str, start: int) -> int:
    """The index after the character class opening at ``start``."""
    index = start + 1
    if index < len(pattern) and pattern[index] == "^":
        index += 1
    if index < len(pattern) and pattern[index] == "]":
        index += 1
    while index < len(pattern) and pattern[index] != "]":
        index += 2 if pattern[index] == "\\" else 1
    return index + 1


def compile_pattern(pattern: str, flags: int = 0, where: str = "pattern") -> regex.Pattern[str]:
    """The checked, compiled pattern (``re`` syntax); InvalidPayload saying why not."""
    check_pattern(pattern, where)
    try:
        return regex.compile(pattern, regex.VERSION0 | flags)
    except (regex.error, OverflowError, RecursionError, MemoryError) as exc:
        raise InvalidPayload(f"{where} {pattern[:80]!r}: {exc}") from None


async def compile_checked(pattern: str, flags: int = 0, where: str = "pattern") -> None:
    """Check and compile ``pattern`` off the event loop, within COMPILE_TIMEOUT_S."""
    check_pattern(pattern, where)
    await off_the_loop(compile_pattern, pattern, flags, where)


async def off_the_loop(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a thread, given up (422) after COMPILE_TIMEOUT_S. The thread
    cannot be stopped; the size bounds keep it short."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(function, *args), COMPILE_TIMEOUT_S)
    except TimeoutError:
        raise InvalidPayload(
            f"compiling took longer than {COMPILE_TIMEOUT_S} s; simplify the patterns"
        ) from None


# --- Time, when matching ---------------------------------------------------------------------


class RegexBudget:
    """The time a request's regular expressions may still take."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self) -> float:
        """The time a match may take now; RegexTimeout when none is left."""
        left = self.remaining()
        if left <= 0:
            raise RegexTimeout(self.exhausted())
        return left

    def exhausted(self) -> str:
        return (
            f"the request's regular expressions took longer than {self.seconds:g} s "
            "(TESSERA_REGEX_BUDGET_SECONDS)"
        )


_budget: contextvars.ContextVar[RegexBudget | None] = contextvars.ContextVar(
    "tessera_regex_budget", default=None
)


@contextmanager
def request_budget() -> Iterator[RegexBudget]:
    """A fresh budget for the regular expressions run inside the block."""
    budget = RegexBudget(_limits.budget_s)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def current_budget() -> RegexBudget:
    """The budget of the request being served, or a fresh one outside any."""
    return _budget.get() or RegexBudget(_limits.budget_s)


def search_in_thread(
    pattern: regex.Pattern[str], text: str, budget: RegexBudget
) -> regex.Match[str] | None:
    """A search that may block (run it in a thread), within the budget; RegexTimeout when
    it runs out. The GIL is released while it runs."""
    try:
        return pattern.search(text, timeout=budget.timeout(), concurrent=True)
    except TimeoutError:
        raise RegexTimeout(budget.exhausted()) from None


async def search(
    pattern: regex.Pattern[str], text: str, budget: RegexBudget
) -> regex.Match[str] | None:
    """``pattern.search(text)`` within the budget, never holding the event loop for long:
    tried on the loop for INLINE_S, finished in a thread when it takes longer."""
    try:
        return pattern.search(text, timeout=min(INLINE_S, budget.timeout()))
    except TimeoutError:
        pass
    return await asyncio.to_thread(search_in_thread, pattern, text, budget)


class TimedPattern:
    """A stand-in for a compiled ``re`` pattern in code that calls ``.search`` or ``.match``
    (the validators fastjsonschema generates, run in a thread): the ``regex`` package within
    the budget of the request being validated."""

    def __init__(self, pattern: regex.Pattern[str]) -> None:
        self.pattern = pattern

    def search(self, text: str) -> regex.Match[str] | None:
        return search_in_thread(self.pattern, text, current_budget())

    def match(self, text: str) -> regex.Match[str] | None:
        budget = current_budget()
        try:
            return self.pattern.match(text, timeout=budget.timeout(), concurrent=True)
        except TimeoutError:
            raise RegexTimeout(budget.exhausted()) from None
