"""Emitting an internal event from a workflow, and the template rendering actions share.

The emitted event is stored and matched against rules after the run (``Effects.emitted``), so a
workflow can start others ("order-paid" → "send-invoice") without calling them directly.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from tessera.core.reshaping import check_templates, render
from tessera.model.event import event_type_problem, normalise_event_type
from tessera.workflow.action import (
    Action,
    ActionConfig,
    ActionContext,
    ActionResult,
    EmittedEvent,
    Output,
)

# What a template in an action's configuration may read: the documents and the payload.
WORKFLOW_ROOTS = frozenset({"event", "profile", "session", "payload"})
MAX_PROPERTIES = 100


def check_workflow_templates(value: Any, where: str) -> None:
    """InvalidPayload for the first template in ``value`` that cannot be compiled."""
    check_templates(value, where, WORKFLOW_ROOTS)


def render_in_context(value: Any, payload: Any, context: ActionContext, where: str) -> Any:
    """``value`` with its templates filled from the run; a failing one becomes None and its
    warning goes into the trace, as a template failure must not stop the workflow."""
    scope = {
        "event": context.event,
        "profile": context.profile or {},
        "session": context.session or {},
        "payload": payload,
    }
    warnings: list[str] = []
    rendered = render(value, scope, warnings, where, WORKFLOW_ROOTS)
    context.effects.logs.extend(("warning", warning) for warning in warnings)
    return rendered


class EmitEventConfig(ActionConfig):
    type: str = Field(
        max_length=128,
        description='Event type; normalised like collected ones ("Order Paid" → order-paid)',
    )
    properties: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_PROPERTIES,
        description="The event's properties; values may be templates such as "
        "{{ profile.traits.name }} or {{ payload.total }}",
    )

    @field_validator("type")
    @classmethod
    def _normalised(cls, value: str) -> str:
        normalised = normalise_event_type(value)
        problem = event_type_problem(normalised)
        if problem is not None:
            raise ValueError(f"an event type {problem}")
        return normalised


class EmitEvent(Action[EmitEventConfig]):
    name = "emit_event"
    title = "Emit event"
    description = "Raises an internal event for this profile once the run is over."
    config_model = EmitEventConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: EmitEventConfig) -> None:
        check_workflow_templates(config.properties, "properties")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        properties = render_in_context(self.config.properties, payload, context, "properties")
        context.effects.emitted.append(EmittedEvent(self.config.type, properties))
        return Output("payload", payload)


ACTIONS = (EmitEvent,)
