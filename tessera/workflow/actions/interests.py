"""Interests: how much a person cares about a topic, one number per name on the profile.

``add_interest`` sets the number; ``increase_interest`` and ``decrease_interest`` move it (an
interest the profile does not have yet counts as 0), so "viewed a bike page" can add 1 each time.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, field_validator

from tessera.workflow.action import Action, ActionConfig, ActionContext, ActionResult, Output

INTEREST_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
# Far beyond any real score, and small enough that sums stay exact-ish and JSON-friendly.
LARGEST_VALUE = 1e12


class InterestConfig(ActionConfig):
    interest: str = Field(
        pattern=INTEREST_PATTERN,
        description="Interest name: 1-128 of letters, digits, '_' or '-' (e.g. bikes)",
    )
    value: float = Field(
        1.0,
        ge=-LARGEST_VALUE,
        le=LARGEST_VALUE,
        description="The value to set (add_interest) or the step (increase/decrease)",
    )

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class StepConfig(InterestConfig):
    value: float = Field(
        1.0, gt=0, le=LARGEST_VALUE, description="How much to move the interest (more than 0)"
    )


def _current(profile: dict[str, Any], name: str) -> float:
    interests = profile.get("interests")
    found = interests.get(name) if isinstance(interests, dict) else None
    if isinstance(found, int | float) and not isinstance(found, bool) and math.isfinite(found):
        return float(found)
    return 0.0


def _set(name: str, value: float, payload: Any, context: ActionContext) -> ActionResult:
    context.need_profile()
    return Output("payload", context.write(f"profile@interests.{name}", value, payload))


class AddInterest(Action[InterestConfig]):
    name = "add_interest"
    title = "Set interest"
    description = "Sets a profile interest to a value (1 unless told otherwise)."
    config_model = InterestConfig
    outputs = ("payload",)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        return _set(self.config.interest, self.config.value, payload, context)


class IncreaseInterest(Action[StepConfig]):
    name = "increase_interest"
    title = "Increase interest"
    description = "Adds to a profile interest (a missing interest starts at 0)."
    config_model = StepConfig
    outputs = ("payload",)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        profile = context.need_profile()
        value = _current(profile, self.config.interest) + self.config.value
        return _set(self.config.interest, value, payload, context)


class DecreaseInterest(Action[StepConfig]):
    name = "decrease_interest"
    title = "Decrease interest"
    description = "Subtracts from a profile interest (a missing interest starts at 0)."
    config_model = StepConfig
    outputs = ("payload",)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        profile = context.need_profile()
        value = _current(profile, self.config.interest) - self.config.value
        return _set(self.config.interest, value, payload, context)


ACTIONS = (AddInterest, IncreaseInterest, DecreaseInterest)
