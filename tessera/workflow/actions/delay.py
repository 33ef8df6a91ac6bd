"""Waiting: the workflow continues from this node later, after a pause or at a given time.

The action only answers ``Suspend``; the engine stores the run and resumes it when it is due.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, Self

from pydantic import Field, model_validator

from tessera.errors import InvalidPayload
from tessera.workflow.action import (
    Action,
    ActionConfig,
    ActionContext,
    ActionError,
    ActionResult,
    Suspend,
    check_path,
)
from tessera.workflow.actions.datetime_ops import parse_datetime

# Longer waits belong to a scheduled rule, not to a run held open for months.
MAX_DELAY_SECONDS = 90 * 24 * 3600


class DelayConfig(ActionConfig):
    seconds: float | None = Field(
        None, gt=0, le=MAX_DELAY_SECONDS, description="How long to wait (at most 90 days)"
    )
    until_path: str | None = Field(
        None,
        description=(
            "Dot path of an ISO 8601 date (or epoch number) to wait for, e.g. "
            "event@properties.appointment (UTC when it has no zone); a past date continues at once"
        ),
    )

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if (self.seconds is None) == (self.until_path is None):
            raise ValueError("give either seconds or until_path")
        return self


class Delay(Action[DelayConfig]):
    name = "delay"
    title = "Wait"
    description = "Pauses the workflow for a while or until a date, then continues."
    config_model = DelayConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: DelayConfig) -> None:
        if config.until_path is not None:
            try:
                check_path(config.until_path)
            except InvalidPayload as exc:
                raise InvalidPayload(f"action 'delay': until_path: {exc.message}") from None

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        if self.config.seconds is not None:
            return Suspend(self.config.seconds, payload, port="payload")
        path = self.config.until_path or ""
        until = parse_datetime(context.read(path, payload), UTC, path)
        now = context.now if context.now.tzinfo is not None else context.now.replace(tzinfo=UTC)
        seconds = max((until - now).total_seconds(), 0.0)
        if seconds > MAX_DELAY_SECONDS:
            raise ActionError(f"{path}: {until.isoformat()} is more than 90 days away")
        return Suspend(seconds, payload, port="payload")


ACTIONS = (Delay,)
