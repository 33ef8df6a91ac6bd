"""Actions that change one value of the profile, the session or the payload: set, copy, append
to a list, delete, increment.

Their paths must name a key inside a writable part (``profile@traits.plan``, not
``profile@traits``): replacing a whole part with one value would leave a profile the model
cannot read. A change to the profile or the session is saved once, when the run ends.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec
from pydantic import Field, StrictFloat, StrictInt

from tessera.core.reshaping import copy_json
from tessera.errors import InvalidPayload
from tessera.model.bounds import bounded_sum, out_of_bounds
from tessera.workflow.action import (
    MISSING,
    Action,
    ActionConfig,
    ActionContext,
    ActionError,
    ActionResult,
    BoundExceeded,
    Output,
    check_path,
    split_path,
)
from tessera.workflow.actions.template import check_workflow_templates, render_value

log = logging.getLogger(__name__)

Number = StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]


def check_value_path(path: str) -> None:
    """A writable path that names one value, not a whole part of a profile or session."""
    check_path(path, writable=True)
    root, keys = split_path(path)
    if root in ("profile", "session") and len(keys) < 2:
        raise InvalidPayload(f"path {path!r}: name a key inside {root}@{keys[0]}")


class SetTraitConfig(ActionConfig):
    path: str = Field(description="Where to write, e.g. profile@traits.plan or payload@total.")
    value: Any = Field(
        None,
        description="The value to write: any JSON; strings may be templates, e.g. "
        "'{{ event.properties.plan }}' (a lone path keeps the value's type).",
    )


class SetTrait(Action[SetTraitConfig]):
    name = "set_trait"
    title = "Set a value"
    description = "Writes a value (templates rendered) at a profile, session or payload path."
    config_model = SetTraitConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: SetTraitConfig) -> None:
        check_value_path(config.path)
        check_workflow_templates(config.value, "value")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        value = render_value(self.config.value, "value", context, payload)
        return Output("payload", context.write(self.config.path, value, payload))


class CopyTraitConfig(ActionConfig):
    source: str = Field(description="The path to read, e.g. event@properties.email.")
    target: str = Field(description="The path to write, e.g. profile@traits.email.")


class CopyTrait(Action[CopyTraitConfig]):
    name = "copy_trait"
    title = "Copy a value"
    description = (
        "Copies the value at one path to another. When the source holds nothing, nothing is "
        "written: the run goes on and its trace says so."
    )
    config_model = CopyTraitConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: CopyTraitConfig) -> None:
        check_path(config.source)
        check_value_path(config.target)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        value = context.read(self.config.source, payload)
        if value is MISSING:
            message = f"{self.config.source} holds nothing; {self.config.target} is unchanged"
            context.effects.logs.append(("info", message))
            log.debug("workflow %s, node %s: %s", context.workflow_id, context.node_id, message)
            return Output("payload", payload)
        return Output("payload", context.write(self.config.target, copy_json(value), payload))


class AppendTraitConfig(ActionConfig):
    path: str = Field(description="The list to append to, e.g. profile@traits.tags.")
    value: Any = Field(
        description="A value to append, or a list of values to append each; may be a template "
        "such as '{{ event.properties.product_id }}'. Values already in the list are skipped."
    )


def _canonical(value: Any) -> bytes:
    # JSON equality, not Python's: `1` and `true` are different values in a JSON list.
    return msgspec.json.encode(value, order="sorted")


class AppendTrait(Action[AppendTraitConfig]):
    name = "append_trait"
    title = "Add to a list"
    description = (
        "Appends values to the list at a path (created when missing), skipping values the "
        "list already holds."
    )
    config_model = AppendTraitConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: AppendTraitConfig) -> None:
        check_value_path(config.path)
        check_workflow_templates(config.value, "value")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        rendered = render_value(self.config.value, "value", context, payload)
        items = rendered if isinstance(rendered, list) else [rendered]
        current = context.read(self.config.path, payload)
        if current is MISSING or current is None:
            current = []
        if not isinstance(current, list):
            raise ActionError(
                f"{self.config.path} holds {type(current).__name__}, not a list to append to"
            )
        updated = copy_json(current)
        seen = {_canonical(item) for item in updated}
        for item in items:
            key = _canonical(item)
            if key not in seen:
                seen.add(key)
                updated.append(item)
        if len(updated) == len(current):
            return Output("payload", payload)  # nothing new: leave the document unchanged
        return Output("payload", context.write(self.config.path, updated, payload))


class DeleteTraitConfig(ActionConfig):
    path: str = Field(description="The value to remove, e.g. profile@traits.coupon.")


class DeleteTrait(Action[DeleteTraitConfig]):
    name = "delete_trait"
    title = "Delete a value"
    description = "Removes the value at a path; a path that holds nothing is left as it is."
    config_model = DeleteTraitConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: DeleteTraitConfig) -> None:
        check_value_path(config.path)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        if context.read(self.config.path, payload) is MISSING:
            return Output("payload", payload)  # not marking the profile changed for nothing
        return Output("payload", context.write(self.config.path, MISSING, payload))


class IncrementTraitConfig(ActionConfig):
    path: str = Field(description="The number to change, e.g. profile@stats.orders.")
    by: Number = Field(1, description="What to add; negative to subtract.")


class IncrementTrait(Action[IncrementTraitConfig]):
    name = "increment_trait"
    title = "Increment a number"
    description = (
        "Adds a number to the number at a path; a missing value counts as 0. Fails when the "
        "path holds something else than a number."
    )
    config_model = IncrementTraitConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: IncrementTraitConfig) -> None:
        check_value_path(config.path)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        current = context.read(self.config.path, payload)
        if current is MISSING or current is None:
            current = 0
        if isinstance(current, bool) or not isinstance(current, int | float):
            raise ActionError(f"{self.config.path} holds {current!r}, not a number")
        limit = context.services.limits.max_number
        result = bounded_sum(current, self.config.by, limit)
        if result is None:
            raise BoundExceeded(
                f"{self.config.path}: {current!r} + {self.config.by!r} is {out_of_bounds(limit)}"
            )
        return Output("payload", context.write(self.config.path, result, payload))


ACTIONS = (SetTrait, CopyTrait, AppendTrait, DeleteTrait, IncrementTrait)
