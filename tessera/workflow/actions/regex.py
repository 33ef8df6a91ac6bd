"""The ``regex_match`` action: test a text against a regular expression and keep its groups.

Patterns are run by the ``regex`` package rather than ``re`` for one reason: a time limit. A
pattern with nested repetition can take exponential time on a crafted text, and a workflow
runs inside the server's event loop, so a match runs within the request's regular expression
budget (``TESSERA_REGEX_BUDGET_SECONDS``, shared by every ``regex_match`` of one request's
workflows), and on the event loop only for its first milliseconds (core/patterns.py); a
match that does not finish within ``MATCH_TIMEOUT_S`` or the budget fails the action instead
of stalling every request. A pattern's size is bounded before it is compiled
(``TESSERA_REGEX_MAX_LENGTH``, ``TESSERA_REGEX_MAX_REPEAT``). The syntax is that of ``re``
(the package's compatible VERSION0).

The pattern is searched anywhere in the text; anchor it with ``^`` and ``$`` to match it whole.
"""

from __future__ import annotations

from typing import Any

import regex
from pydantic import Field

from tessera.core.patterns import (
    RegexBudget,
    RegexTimeout,
    compile_pattern,
    current_budget,
    search,
)
from tessera.workflow.action import (
    Action,
    ActionConfig,
    ActionContext,
    ActionError,
    ActionResult,
    BoundExceeded,
    Output,
    check_path,
)
from tessera.workflow.actions.traits import check_value_path

# The model's own ceiling; TESSERA_REGEX_MAX_LENGTH (at most this) is checked when compiling.
MAX_PATTERN_LENGTH = 100_000
MATCH_TIMEOUT_S = 0.1


class RegexMatchConfig(ActionConfig):
    pattern: str = Field(
        min_length=1,
        max_length=MAX_PATTERN_LENGTH,
        description="A regular expression (Python syntax), "
        "e.g. '^(?P<user>[^@]+)@(?P<domain>.+)$'.",
    )
    path: str = Field(description="The text to test, e.g. event@properties.email.")
    target: str = Field(
        "payload@match",
        description="Where the groups go on a match: an object of the named groups when the "
        "pattern names some, else the list of groups (or [whole match] without groups).",
    )
    ignore_case: bool = Field(False, description="Match letters regardless of case.")


def _compile(pattern: str, ignore_case: bool) -> regex.Pattern[str]:
    return compile_pattern(pattern, regex.IGNORECASE if ignore_case else 0)


class RegexMatch(Action[RegexMatchConfig]):
    name = "regex_match"
    title = "If a text matches"
    description = (
        "Searches a text for a regular expression: on a match the groups are written at the "
        "target and the payload goes on along 'true', else unchanged along 'false' (a missing "
        "value or one that is not a string does not match)."
    )
    config_model = RegexMatchConfig
    outputs = ("true", "false")

    def __init__(self, config: RegexMatchConfig) -> None:
        super().__init__(config)
        self._pattern = _compile(config.pattern, config.ignore_case)

    @classmethod
    def check_config(cls, config: RegexMatchConfig) -> None:
        _compile(config.pattern, config.ignore_case)
        check_path(config.path)
        check_value_path(config.target)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        text = context.read(self.config.path, payload)
        if not isinstance(text, str):
            return Output("false", payload)
        budget = current_budget()
        # One match may take MATCH_TIMEOUT_S at most, and no more than the request has left.
        mine = RegexBudget(min(MATCH_TIMEOUT_S, max(budget.remaining(), 0.0)))
        try:
            match = await search(self._pattern, text, mine)
        except RegexTimeout:
            if budget.remaining() <= 0:
                message = f"regex_match on {self.config.path}: {budget.exhausted()}"
                raise BoundExceeded(message) from None
            raise ActionError(
                f"regex_match: the pattern took longer than {MATCH_TIMEOUT_S} s on "
                f"{self.config.path}; simplify it"
            ) from None
        if match is None:
            return Output("false", payload)
        groups: dict[str, Any] | list[Any]
        if self._pattern.groupindex:
            groups = match.groupdict()
        elif self._pattern.groups:
            groups = list(match.groups())
        else:
            groups = [match.group(0)]
        return Output("true", context.write(self.config.target, groups, payload))


ACTIONS = (RegexMatch,)
