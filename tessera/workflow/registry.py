"""Which actions exist: the built-ins and those of installed plugins, registered the same way.

A plugin package declares an entry point in the group ``tessera.actions`` naming either an
``Action`` subclass or a module with an ``ACTIONS`` tuple of them::

    [project.entry-points."tessera.actions"]
    my_actions = "my_package.actions"

Built-in action modules are listed in ``BUILTIN_MODULES`` and loaded through the same code.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from tessera.errors import InvalidPayload
from tessera.workflow.action import Action

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tessera.actions"

# One module per action (or per small family of actions sharing one job), each with ACTIONS.
BUILTIN_MODULES: tuple[str, ...] = (
    "tessera.workflow.actions.flow",
    "tessera.workflow.actions.traits",
    "tessera.workflow.actions.template",
    "tessera.workflow.actions.calculator",
    "tessera.workflow.actions.regex",
    "tessera.workflow.actions.url",
    "tessera.workflow.actions.hashing",
    "tessera.workflow.actions.datetime_ops",
    "tessera.workflow.actions.segments",
    "tessera.workflow.actions.interests",
    "tessera.workflow.actions.consents",
    "tessera.workflow.actions.identity",
    "tessera.workflow.actions.session",
    "tessera.workflow.actions.events",
    "tessera.workflow.actions.delay",
    "tessera.workflow.actions.http",
    "tessera.workflow.actions.email",
    "tessera.workflow.actions.slack",
    "tessera.workflow.actions.memory",
)

ActionClass = type[Action[Any]]


class ActionRegistry:
    def __init__(self) -> None:
        self._actions: dict[str, ActionClass] = {}

    def register(self, action: ActionClass) -> None:
        name = getattr(action, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{action!r} has no name")
        known = self._actions.get(name)
        if known is not None and known is not action:
            raise ValueError(f"two actions are named {name!r}: {known!r} and {action!r}")
        self._actions[name] = action

    def register_module(self, module: ModuleType) -> None:
        for action in getattr(module, "ACTIONS", ()):
            self.register(action)

    def get(self, name: str) -> ActionClass:
        action = self._actions.get(name)
        if action is None:
            raise InvalidPayload(f"there is no action named {name!r}")
        return action

    def names(self) -> list[str]:
        return sorted(self._actions)

    def describe(self) -> list[dict[str, Any]]:
        """What a form (or a user) needs to know about each action."""
        return [
            {
                "name": action.name,
                "title": action.title,
                "description": action.description,
                "outputs": list(action.outputs),
                "config_schema": action.config_model.model_json_schema(),
            }
            for action in (self._actions[name] for name in self.names())
        ]


def load_plugins(registry: ActionRegistry) -> None:
    """Register every action installed packages declare; a broken plugin is logged, skipped."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        # A plugin is someone else's code: whatever it raises while loading or registering,
        # the server starts without it and says why.
        try:
            loaded = entry.load()
            if isinstance(loaded, ModuleType):
                registry.register_module(loaded)
            elif isinstance(loaded, type) and issubclass(loaded, Action):
                registry.register(loaded)
            else:
                log.error("action plugin %s is neither an Action nor a module of them", entry.name)
        except Exception:
            log.exception("action plugin %s could not be loaded; skipped", entry.name)


def default_registry(*, plugins: bool = True) -> ActionRegistry:
    registry = ActionRegistry()
    for module_name in BUILTIN_MODULES:
        registry.register_module(importlib.import_module(module_name))
    if plugins:
        load_plugins(registry)
    return registry
