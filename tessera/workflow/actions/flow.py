"""Actions that steer a workflow rather than change data: where it starts and ends, which way
it branches, what it logs, when it fails, and what payload it carries on.

The ``condition`` action speaks the condition language of tessera.query, whose fields are
``event@…``, ``profile@…`` and ``session@…``; the parser knows no other entity, so the payload
cannot be tested there (``property_exists`` and ``regex_match`` read payload paths).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

from pydantic import Field

from tessera.core.reshaping import copy_json
from tessera.errors import InvalidPayload
from tessera.query import Condition, evaluate, parse
from tessera.workflow.action import (
    MISSING,
    Action,
    ActionConfig,
    ActionContext,
    ActionError,
    ActionResult,
    Output,
    check_path,
)
from tessera.workflow.actions.template import as_text, check_workflow_templates, render_value

log = logging.getLogger(__name__)

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class NoConfig(ActionConfig):
    """An action without settings: any field given is refused."""


class Start(Action[NoConfig]):
    name = "start"
    title = "Start"
    description = "Where a workflow begins; passes its payload on unchanged."
    config_model = NoConfig
    outputs = ("payload",)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        return Output("payload", payload)


class End(Action[NoConfig]):
    name = "end"
    title = "End"
    description = "Ends this branch of the workflow; other branches go on."
    config_model = NoConfig
    outputs = ()

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        return None


class ConditionConfig(ActionConfig):
    condition: str = Field(
        min_length=1,
        description="A condition over event@…, profile@… and session@… fields, e.g. "
        "\"profile@traits.plan == 'pro' AND event@properties.price > 100\".",
    )


class CheckCondition(Action[ConditionConfig]):
    name = "condition"
    title = "If"
    description = (
        "Tests a condition on the event, profile and session; the payload goes on, unchanged, "
        "along 'true' or 'false'."
    )
    config_model = ConditionConfig
    outputs = ("true", "false")

    def __init__(self, config: ConditionConfig) -> None:
        super().__init__(config)
        # Parsed once per built action; check_config has already proved it parses.
        self._condition: Condition = parse(config.condition)

    @classmethod
    def check_config(cls, config: ConditionConfig) -> None:
        parse(config.condition)  # QuerySyntaxError is an InvalidPayload that names the place

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        records = {
            name: document
            for name, document in (
                ("event", context.event),
                ("profile", context.profile),
                ("session", context.session),
            )
            if document is not None
        }
        holds = evaluate(self._condition, records)
        return Output("true" if holds else "false", payload)


class PropertyExistsConfig(ActionConfig):
    path: str = Field(
        description="The dot path to look at, e.g. profile@traits.email or payload@order.id."
    )


class PropertyExists(Action[PropertyExistsConfig]):
    name = "property_exists"
    title = "If a value exists"
    description = (
        "Goes on along 'true' when the path holds a value (null counts, as EXISTS does in "
        "conditions), else along 'false'; the payload is unchanged."
    )
    config_model = PropertyExistsConfig
    outputs = ("true", "false")

    @classmethod
    def check_config(cls, config: PropertyExistsConfig) -> None:
        check_path(config.path)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        found = context.read(self.config.path, payload) is not MISSING
        return Output("true" if found else "false", payload)


class LogConfig(ActionConfig):
    message: str = Field(
        min_length=1,
        max_length=1_000,
        description="The line to log; may be a template, e.g. 'order {{ event.properties.id }}'.",
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="How serious the line is."
    )


class LogMessage(Action[LogConfig]):
    name = "log"
    title = "Log"
    description = "Writes a line into the run's trace and the server log; the payload goes on."
    config_model = LogConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: LogConfig) -> None:
        check_workflow_templates(config.message, "message")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        try:
            message = as_text(render_value(self.config.message, "message", context, payload))
        except ActionError as exc:
            # A log line is a diagnostic: it must not stop the workflow it is diagnosing.
            message = f"{self.config.message} ({exc})"
        context.effects.logs.append((self.config.level, message))
        log.log(
            LOG_LEVELS[self.config.level],
            "workflow %s, node %s: %s",
            context.workflow_id,
            context.node_id,
            message,
        )
        return Output("payload", payload)


class RaiseErrorConfig(ActionConfig):
    message: str = Field(
        min_length=1, max_length=1_000, description="Why the workflow stops; shown in its trace."
    )


class RaiseError(Action[RaiseErrorConfig]):
    name = "raise_error"
    title = "Fail"
    description = "Stops the workflow run with an error message."
    config_model = RaiseErrorConfig
    outputs = ()

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        raise ActionError(self.config.message)


class InjectDataConfig(ActionConfig):
    value: Any = Field(description="Any JSON value: the payload sent on.")
    merge: bool = Field(
        False,
        description="Merge the value (an object) into the payload (an object): its keys replace "
        "those of the payload. Without it the value replaces the payload.",
    )


def _is_json(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return False
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _is_json(item, depth + 1) for key, item in value.items()
        )
    return False


class InjectData(Action[InjectDataConfig]):
    name = "inject_data"
    title = "Set the payload"
    description = "Sends a fixed JSON value on as the payload, or merges it into the payload."
    config_model = InjectDataConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: InjectDataConfig) -> None:
        if not _is_json(config.value):
            raise InvalidPayload("value: not a JSON value (or nested more than 64 levels)")
        if config.merge and not isinstance(config.value, dict):
            raise InvalidPayload("value: only an object can be merged into the payload")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        value = copy_json(self.config.value)  # each run gets its own copy to change
        if not self.config.merge:
            return Output("payload", value)
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ActionError(
                f"cannot merge an object into a payload that is {type(payload).__name__}"
            )
        return Output("payload", {**payload, **value})


ACTIONS = (Start, End, CheckCondition, PropertyExists, LogMessage, RaiseError, InjectData)
