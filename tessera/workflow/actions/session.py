"""Writing session properties from a workflow (the campaign a visit came from, a cart id…)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tessera.errors import InvalidPayload
from tessera.workflow.action import (
    Action,
    ActionConfig,
    ActionContext,
    ActionError,
    ActionResult,
    Output,
    check_path,
)
from tessera.workflow.actions.events import check_workflow_templates, render_in_context

MAX_PROPERTIES = 100


class UpdateSessionConfig(ActionConfig):
    properties: dict[str, Any] = Field(
        min_length=1,
        max_length=MAX_PROPERTIES,
        description=(
            "Key → value written under session properties; a key may be a dot path "
            "(utm.source) and a value a template such as {{ event.properties.campaign }}"
        ),
    )


class UpdateSession(Action[UpdateSessionConfig]):
    name = "update_session"
    title = "Update session"
    description = "Writes values into the session's properties."
    config_model = UpdateSessionConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: UpdateSessionConfig) -> None:
        for key in config.properties:
            try:
                check_path(f"session@properties.{key}", writable=True)
            except InvalidPayload:
                raise InvalidPayload(f"properties: {key!r} is not a key or dot path") from None
        check_workflow_templates(config.properties, "properties")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        if context.session is None:
            raise ActionError("this event has no session; nothing to update")
        for key, value in self.config.properties.items():
            rendered = render_in_context(value, payload, context, f"properties.{key}")
            payload = context.write(f"session@properties.{key}", rendered, payload)
        return Output("payload", payload)


ACTIONS = (UpdateSession,)
