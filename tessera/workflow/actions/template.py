"""The ``template`` action, and the template scope the other built-in actions share.

Workflow templates are the sandboxed Jinja2 templates of tessera.core.reshaping, reading one
more root than mapping rules do: ``payload``, the value that flowed into the node. A template
that compiled when the workflow was saved may still fail on a given event (a filter given the
wrong kind of value); actions here turn that into an ActionError, so the trace names the node
instead of silently writing None into a profile.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from tessera.core.reshaping import MAPPING_ROOTS, check_templates, render
from tessera.workflow.action import (
    Action,
    ActionConfig,
    ActionContext,
    ActionError,
    ActionResult,
    Output,
    check_path,
)

WORKFLOW_ROOTS = MAPPING_ROOTS | {"payload"}


def template_scope(context: ActionContext, payload: Any) -> dict[str, Any]:
    """What a workflow template reads; a missing profile or session reads as empty."""
    return {
        "event": context.event,
        "profile": context.profile or {},
        "session": context.session or {},
        "payload": payload,
    }


def check_workflow_templates(value: Any, where: str) -> None:
    """InvalidPayload naming ``where`` when a template in ``value`` is refused."""
    check_templates(value, where, WORKFLOW_ROOTS)


def render_value(value: Any, where: str, context: ActionContext, payload: Any) -> Any:
    """``value`` with every template rendered; ActionError when one fails on this event."""
    warnings: list[str] = []
    rendered = render(value, template_scope(context, payload), warnings, where, WORKFLOW_ROOTS)
    if warnings:
        raise ActionError("; ".join(warnings))
    return rendered


def as_text(value: Any) -> str:
    """How a rendered value reads as text: nothing for None, JSON for objects and lists."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class TemplateConfig(ActionConfig):
    template: str = Field(
        min_length=1,
        description="A template, e.g. 'Hello {{ profile.traits.name }}'; it reads event, "
        "profile, session and payload. The result is always text.",
    )
    target: str = Field(
        "payload@text",
        description="Where the rendered text goes: a payload, profile or session path.",
    )


class RenderTemplate(Action[TemplateConfig]):
    name = "template"
    title = "Render a template"
    description = (
        "Renders a text template over the event, profile, session and payload and writes the "
        "text at the target path."
    )
    config_model = TemplateConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: TemplateConfig) -> None:
        check_workflow_templates(config.template, "template")
        check_path(config.target, writable=True)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        text = as_text(render_value(self.config.template, "template", context, payload))
        return Output("payload", context.write(self.config.target, text, payload))


ACTIONS = (RenderTemplate,)
