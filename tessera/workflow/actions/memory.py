"""``memory_write``, ``memory_read``, ``memory_delete``: the workflows' key-value memory.

Memory outlives a workflow run: a value written for one event is there for the next (until its
``ttl_s`` runs out), which is how workflows count, deduplicate ("sent already today?") or hand
data to each other. Keys are templates, e.g. ``"welcome-sent:{{ profile.id }}"``; the store keeps
every tenant's keys apart, and all workflows of a tenant share them.

Memory holds JSON values but not null: writing a value that is None or missing deletes the key,
so reading it answers ``missing`` either way.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

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

MAX_KEY_LENGTH = 255  # the store's key column
KEY_DESCRIPTION = "The key; a template, e.g. 'welcome-sent:{{ profile.id }}'."


def _key(template: str, context: ActionContext, payload: Any) -> str:
    """The rendered key; ActionError when it is empty or too long (a template over data that
    is missing would otherwise make every profile share one key)."""
    key = as_text(render_value(template, "key", context, payload)).strip()
    if not key:
        raise ActionError(f"key {template!r} rendered empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ActionError(f"key {key[:40]!r}…: longer than {MAX_KEY_LENGTH} characters")
    return key


class MemoryWriteConfig(ActionConfig):
    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH, description=KEY_DESCRIPTION)
    value: Any = Field(
        None,
        description="The value to keep: any JSON, strings in it may be templates. Give this or "
        "from_path.",
    )
    from_path: str | None = Field(
        None,
        description="Keep the value found at this dot path instead, e.g. 'payload@response.body'.",
    )
    ttl_s: float | None = Field(
        None,
        gt=0,
        description="Forget the value after this many seconds; kept until deleted when not set.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> MemoryWriteConfig:
        if (self.value is None) == (self.from_path is None):
            raise ValueError("give either value or from_path")
        return self


class MemoryWrite(Action[MemoryWriteConfig]):
    name = "memory_write"
    title = "Remember a value"
    description = "Keeps a value under a key in the workflows' memory, optionally for a while."
    config_model = MemoryWriteConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: MemoryWriteConfig) -> None:
        check_workflow_templates(config.key, "key")
        check_workflow_templates(config.value, "value")
        if config.from_path is not None:
            check_path(config.from_path)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        config = self.config
        key = _key(config.key, context, payload)
        if config.from_path is not None:
            value = context.read(config.from_path, payload)
        else:
            value = render_value(config.value, "value", context, payload)
        memory = context.services.memory
        if value is None or value is MISSING:
            await memory.delete(context.tenant, key)
        else:
            await memory.set(context.tenant, key, value, ttl_s=config.ttl_s, now=context.now)
        return Output("payload", payload)


class MemoryReadConfig(ActionConfig):
    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH, description=KEY_DESCRIPTION)
    target: str = Field(
        "payload@memory",
        description="Where to put the value found: a writable dot path (payload@…, "
        "profile@traits.…, session@properties.…).",
    )


class MemoryRead(Action[MemoryReadConfig]):
    name = "memory_read"
    title = "Recall a value"
    description = (
        "Reads a key of the workflows' memory into the payload (or the profile or session): "
        "'found' when it holds a value, 'missing' when not or when it expired."
    )
    config_model = MemoryReadConfig
    outputs = ("found", "missing")

    @classmethod
    def check_config(cls, config: MemoryReadConfig) -> None:
        check_workflow_templates(config.key, "key")
        check_path(config.target, writable=True)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        key = _key(self.config.key, context, payload)
        value = await context.services.memory.get(context.tenant, key, context.now)
        if value is None:
            return Output("missing", payload)
        return Output("found", context.write(self.config.target, value, payload))


class MemoryDeleteConfig(ActionConfig):
    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH, description=KEY_DESCRIPTION)


class MemoryDelete(Action[MemoryDeleteConfig]):
    name = "memory_delete"
    title = "Forget a value"
    description = "Removes a key from the workflows' memory (nothing happens when it is not there)."
    config_model = MemoryDeleteConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: MemoryDeleteConfig) -> None:
        check_workflow_templates(config.key, "key")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        await context.services.memory.delete(
            context.tenant, _key(self.config.key, context, payload)
        )
        return Output("payload", payload)


ACTIONS = (MemoryWrite, MemoryRead, MemoryDelete)
