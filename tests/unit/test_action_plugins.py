"""Actions come from one registry: built-ins through BUILTIN_MODULES, third-party ones through
the `tessera.actions` entry point group of an installed distribution. The plugin here is a
real distribution on sys.path (a module and its dist-info), found by importlib.metadata."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.workflow.registry import ENTRY_POINT_GROUP, default_registry

PLUGIN = """
from typing import Any

from tessera.workflow.action import Action, ActionConfig, ActionContext, ActionResult, Output


class ShoutConfig(ActionConfig):
    word: str


class Shout(Action[ShoutConfig]):
    name = "shout"
    title = "Shout"
    description = "Puts the word in capitals into the payload."
    config_model = ShoutConfig

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        return Output("payload", {"shout": self.config.word.upper()})


ACTIONS = (Shout,)
"""


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "shout_plugin.py").write_text(PLUGIN)
    info = tmp_path / "shout_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nshout = shout_plugin\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield "shout"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shout_plugin", None)


async def test_an_installed_plugin_action_is_registered_and_runs(installed_plugin: str) -> None:
    registry = default_registry()
    action_class = registry.get(installed_plugin)
    action = action_class.build({"word": "hello"})
    answer = await action.run({}, None)  # type: ignore[arg-type]  # this action reads no context
    assert answer is not None and not isinstance(answer, list)
    assert answer.payload == {"shout": "HELLO"}
    described = {item["name"]: item for item in registry.describe()}
    assert described["shout"]["config_schema"]["required"] == ["word"]


def test_without_plugins_only_builtins_are_registered(installed_plugin: str) -> None:
    assert "shout" not in default_registry(plugins=False).names()


def test_every_builtin_action_is_exercised_by_a_test() -> None:
    """Each built-in action (by its name or its class) appears in the action tests."""
    tests = Path(__file__).parent
    text = "\n".join(path.read_text() for path in tests.glob("test_actions_*.py"))
    registry = default_registry(plugins=False)
    untested = [
        name
        for name in registry.names()
        if not any(
            re.search(rf"\b{re.escape(word)}\b", text)
            for word in (name, registry.get(name).__name__)
        )
    ]
    assert untested == []
