"""The ``parse_url`` action: split a URL into the parts a workflow tests and stores.

A value that is not an absolute URL (no scheme or no host, a bad port, not a string, missing)
fails the action with an ActionError: a workflow that parses the page URL expects one, and a
silent empty result would only move the surprise to a later node. Test first with
``property_exists`` when the URL may be absent.

The user name and password a URL may carry are never copied out: they are secrets.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import Field

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
from tessera.workflow.actions.traits import check_value_path


class ParseUrlConfig(ActionConfig):
    path: str = Field("event@context.page.url", description="Where the URL is.")
    target: str = Field(
        "payload@url",
        description="Where its parts go: scheme, host, port, path, query, fragment.",
    )


def url_parts(url: str) -> dict[str, Any]:
    """The parts of an absolute URL; ValueError when ``url`` is not one.

    ``query`` maps each parameter to its value, or to the list of its values when it is
    given more than once (``?tag=a&tag=b``); ``port`` is None unless the URL names one.
    """
    parts = urlsplit(url.strip())
    port = parts.port  # ValueError when it is no number from 0 to 65535
    if not parts.scheme or not parts.hostname:
        raise ValueError("no scheme or no host")
    query = {
        key: values[0] if len(values) == 1 else values
        for key, values in parse_qs(parts.query, keep_blank_values=True).items()
    }
    return {
        "scheme": parts.scheme.lower(),
        "host": parts.hostname,
        "port": port,
        "path": parts.path,
        "query": query,
        "fragment": parts.fragment,
    }


class ParseUrl(Action[ParseUrlConfig]):
    name = "parse_url"
    title = "Parse a URL"
    description = (
        "Splits the URL at a path into scheme, host, port, path, query and fragment and writes "
        "them at the target; fails when the value is not a URL."
    )
    config_model = ParseUrlConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: ParseUrlConfig) -> None:
        check_path(config.path)
        check_value_path(config.target)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        value = context.read(self.config.path, payload)
        if value is MISSING:
            raise ActionError(f"parse_url: {self.config.path} holds no URL")
        if not isinstance(value, str):
            raise ActionError(f"parse_url: {self.config.path} is not a URL ({value!r})")
        try:
            parts = url_parts(value)
        except ValueError as exc:
            raise ActionError(f"parse_url: {self.config.path} is not a URL ({exc})") from None
        return Output("payload", context.write(self.config.target, parts, payload))


ACTIONS = (ParseUrl,)
