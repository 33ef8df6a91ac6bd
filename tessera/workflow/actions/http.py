"""``http_call``: call a web service from a workflow, with templates, timeouts and retries.

The URL, header values and the JSON body may be templates over ``event``, ``profile``,
``session`` and ``payload`` (see tessera.core.reshaping). Only http and https URLs are
allowed, and their scheme and host must be written out: templates may only fill the path, the
query and the fragment, so event data can never choose where the call goes (checked when the
workflow is saved, and again on the rendered URL at each call). The connection itself obeys the
request-forgery policy (tessera/outbound/): a refused address answers on ``error`` at once.

A call is retried on connection errors, timeouts, 5xx and 429 answers, waiting a little longer
each time (0.1 s, 0.2 s, 0.4 s …). It answers on one of two ports:

- ``response`` (a 2xx answer): ``{"status": 200, "headers": {...}, "body": ...}``, the body
  parsed as JSON when the answer says it is JSON, else text.
- ``error`` (any other answer once the retries are spent, or no answer at all):
  ``{"status": 404 | None, "error": "…", "body": ...}``; ``body`` only when there was an answer.

Header values named in ``secret_headers`` (API keys, tokens) are sent, never shown: no message,
log line or payload contains them, and the URL appears in messages without its query string.

A template that fails on an event stops the run with an ActionError naming the field (see
tessera.workflow.actions.template). The sending part (``send_with_retries``) is shared with the
other actions that call web hooks.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import msgspec
from pydantic import Field

from tessera.core.backoff import backoff_delay
from tessera.core.reshaping import is_template
from tessera.errors import InvalidPayload
from tessera.outbound.policy import OutboundRefused
from tessera.outbound.urls import RESERVED_HEADERS, Origin, origin_of
from tessera.security.kept_secrets import restore_kept_secrets
from tessera.workflow.action import (
    REDACTED,
    Action,
    ActionConfig,
    ActionContext,
    ActionError,
    ActionResult,
    Output,
)
from tessera.workflow.actions.template import as_text, check_workflow_templates, render_value

RETRY_BASE_DELAY_S = 0.1
RETRY_MAX_DELAY_S = 2.0
# A larger answer is cut here: payloads go into traces and along the workflow.
MAX_RESPONSE_BYTES = 1024 * 1024
RETRYABLE_STATUSES = frozenset({429})  # and every 5xx
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


# --- URLs -------------------------------------------------------------------------------------


# Where a template may start: Jinja's expressions, statements and comments.
_TEMPLATE_START = re.compile(r"\{\{|\{%|\{#")
# The literal start of a URL: scheme, authority, and what ends the authority (or nothing).
_LITERAL_HEAD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([/?#]|$)")


def fixed_origin(url: str) -> Origin | None:
    """The (scheme, host, port) ``url`` always goes to, whatever its templates render: its
    literal start must hold the whole authority, ended by ``/``, ``?`` or ``#`` before any
    template. None when a template could change the host (the host is never taken from event
    data)."""
    template = _TEMPLATE_START.search(url)
    literal = url if template is None else url[: template.start()]
    head = _LITERAL_HEAD.match(literal)
    if head is None or (template is not None and not head.group(3)):
        return None
    return origin_of(f"{head.group(1)}://{head.group(2)}/")


def check_url(url: str, where: str) -> None:
    """InvalidPayload unless ``url`` is an http(s) URL whose scheme and host are written out:
    templates may only fill its path, query or fragment."""
    head = _LITERAL_HEAD.match(url)
    if head is None or head.group(1).lower() not in ("http", "https"):
        raise InvalidPayload(f"{where}: only http:// and https:// URLs are allowed")
    if "@" in head.group(2):
        raise InvalidPayload(
            f"{where}: no user or password in the URL (it is shown by the API); send "
            "credentials in a header named in secret_headers"
        )
    if fixed_origin(url) is None:
        raise InvalidPayload(
            f"{where}: write the scheme and the host out; only the path, the query and the "
            "fragment may be templates (a host never comes from event data)"
        )
    if is_template(url):
        check_workflow_templates(url, where)


def shown_url(url: str) -> str:
    """The URL for messages: no query string, fragment or user info, which may hold secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def valid_runtime_url(url: Any) -> str | None:
    """The rendered URL when it is a usable http(s) URL, else None."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


# --- Sending with retries ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallResult:
    """The last answer (``status`` None when there was none) after the retries."""

    status: int | None
    headers: dict[str, str]
    body: Any
    error: str | None  # None: a 2xx answer
    attempts: int

    @property
    def ok(self) -> bool:
        return self.error is None


async def _read_limited(response: httpx.Response) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            return b"".join(chunks)[:MAX_RESPONSE_BYTES], True
    return b"".join(chunks), False


def _decode_body(content: bytes, content_type: str, truncated: bool) -> Any:
    text = content.decode("utf-8", errors="replace")
    if not truncated and "json" in content_type.lower():
        try:
            return msgspec.json.decode(content)
        except msgspec.DecodeError:
            return text
    return text


def _retryable(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_STATUSES


async def send_with_retries(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    json_body: Any,
    timeout_s: float,
    retries: int,
) -> CallResult:
    """Send the request up to ``1 + retries`` times; never raises for network trouble.
    ``json_body`` None sends no body. Messages name the URL without its query string."""
    where = f"{method} {shown_url(url)}"
    content = None if json_body is None else msgspec.json.encode(json_body)
    send_headers = dict(headers)
    if content is not None and not any(name.lower() == "content-type" for name in send_headers):
        send_headers["Content-Type"] = "application/json"
    result = CallResult(None, {}, None, f"{where}: not sent", 0)
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(backoff_delay(attempt, RETRY_BASE_DELAY_S, RETRY_MAX_DELAY_S))
        try:
            async with client.stream(
                method, url, content=content, headers=send_headers, timeout=timeout_s
            ) as response:
                raw, truncated = await _read_limited(response)
        except httpx.TimeoutException:
            result = CallResult(
                None, {}, None, f"{where}: no answer within {timeout_s} s", attempt + 1
            )
            continue
        except httpx.InvalidURL:
            return CallResult(None, {}, None, f"{where}: not a valid URL", attempt + 1)
        except OutboundRefused as exc:
            # The same address would be refused again: no retry.
            return CallResult(None, {}, None, f"{where}: {exc}", attempt + 1)
        except httpx.HTTPError as exc:
            # The exception's text can quote the URL; name only its kind.
            failure = f"{where}: {type(exc).__name__} (the connection failed)"
            result = CallResult(None, {}, None, failure, attempt + 1)
            continue
        body = _decode_body(raw, response.headers.get("content-type", ""), truncated)
        answer_headers = dict(response.headers)
        if 200 <= response.status_code < 300:
            return CallResult(response.status_code, answer_headers, body, None, attempt + 1)
        result = CallResult(
            response.status_code,
            answer_headers,
            body,
            f"{where}: answered {response.status_code} {response.reason_phrase}".rstrip(),
            attempt + 1,
        )
        if not _retryable(response.status_code):
            break
    return result


# --- The action -------------------------------------------------------------------------------


def _secret_names(config: dict[str, Any]) -> set[str]:
    names = config.get("secret_headers")
    return {str(name).lower() for name in names} if isinstance(names, list) else set()


class HttpCallConfig(ActionConfig):
    url: str = Field(
        description="The address to call; templates allowed after the literal scheme, e.g. "
        "'https://api.example.com/users/{{ profile.id }}'. Only http:// and https://.",
        min_length=1,
        max_length=2048,
    )
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        "POST", description="The HTTP method."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Request headers; values may be templates. Content-Type defaults to "
        "application/json when there is a body.",
    )
    body: Any = Field(
        None,
        description="The JSON body, any JSON value; strings in it may be templates over event, "
        "profile, session and payload. None (the default) sends no body.",
    )
    timeout_s: float = Field(5.0, gt=0, le=60, description="Seconds to wait for each attempt.")
    retries: int = Field(
        2,
        ge=0,
        le=5,
        description="Further attempts after a connection error, a timeout, a 5xx or a 429 "
        "answer, with a short growing pause between them. A request that timed out may have "
        "been carried out: use 0 for calls that must not happen twice.",
    )
    secret_headers: list[str] = Field(
        default_factory=list,
        description="Names of headers (from 'headers') whose values are secrets: they are sent "
        "but never appear in traces, logs or messages.",
    )

    @property
    def secret_header_names(self) -> frozenset[str]:
        return frozenset(name.lower() for name in self.secret_headers)


class HttpCall(Action[HttpCallConfig]):
    name = "http_call"
    title = "Call a web service"
    description = (
        "Sends an HTTP request built from templates and answers the response on 'response' "
        "(2xx) or the failure on 'error' once the retries are spent."
    )
    config_model = HttpCallConfig
    outputs = ("response", "error")
    secret_destination = ("url",)

    @classmethod
    def redact(cls, config: dict[str, Any]) -> dict[str, Any]:
        shown = dict(config)
        secret = {str(name).lower() for name in config.get("secret_headers") or ()}
        headers = config.get("headers")
        if isinstance(headers, dict):
            shown["headers"] = {
                name: REDACTED if name.lower() in secret else value
                for name, value in headers.items()
            }
        return shown

    @classmethod
    def keep_secrets(cls, config: dict[str, Any], stored: dict[str, Any] | None) -> None:
        """A secret header sent back as REDACTED keeps its stored value, for a header that
        was secret and still is, while the URL stays the same."""
        headers = config.get("headers")
        if not isinstance(headers, dict):
            return
        secret = _secret_names(config)
        for name, value in headers.items():
            if value == REDACTED and name.lower() not in secret:
                # Kept, it would be shown in clear from now on.
                raise InvalidPayload(
                    f"headers.{name}: {REDACTED!r} keeps a secret only for a header named in "
                    "secret_headers"
                )
        old_secret = _secret_names(stored or {})
        old_headers = (stored or {}).get("headers") or {}
        # Only what was secret can be kept: a public header's value is no secret to restore.
        old_view = None
        if stored is not None:
            old_view = {
                "url": stored.get("url"),
                "headers": {
                    name: value
                    for name, value in old_headers.items()
                    if str(name).lower() in old_secret
                },
            }
        restore_kept_secrets(
            config,
            old_view,
            [("headers", name) for name in headers if name.lower() in secret],
            cls.secret_destination,
        )

    @classmethod
    def check_config(cls, config: HttpCallConfig) -> None:
        check_url(config.url, "url")
        names = {name.lower() for name in config.headers}
        for name in config.secret_headers:
            if name.lower() not in names:
                raise InvalidPayload(f"secret_headers: {name!r} is not one of the headers")
        secret = config.secret_header_names
        for name, value in config.headers.items():
            if not _HEADER_NAME.match(name):
                raise InvalidPayload(f"headers: {name!r} is not a valid header name")
            if name.lower() in RESERVED_HEADERS:
                raise InvalidPayload(f"headers: {name!r} is set from the URL and the body")
            try:
                check_workflow_templates(value, f"headers.{name}")
            except InvalidPayload:
                if name.lower() in secret:  # the usual message would quote the secret
                    raise InvalidPayload(f"headers.{name}: the template does not compile") from None
                raise
        check_workflow_templates(config.body, "body")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        config = self.config
        url = valid_runtime_url(render_value(config.url, "url", context, payload))
        if url is None:
            return Output("error", {"status": None, "error": "url: not an http(s) URL"})
        expected = fixed_origin(config.url)
        if expected is None or origin_of(url) != expected:
            # Saving refuses such a URL; one stored before that rule is refused here.
            error = "url: the host must be written out; a template may not choose it"
            return Output("error", {"status": None, "error": error})
        headers = self._headers(context, payload)
        body = render_value(config.body, "body", context, payload)
        result = await send_with_retries(
            context.services.http,
            config.method,
            url,
            headers=headers,
            json_body=body,
            timeout_s=config.timeout_s,
            retries=config.retries,
        )
        if result.ok:
            return Output(
                "response",
                {"status": result.status, "headers": result.headers, "body": result.body},
            )
        failure: dict[str, Any] = {"status": result.status, "error": result.error}
        if result.status is not None:
            failure["body"] = result.body
        return Output("error", failure)

    def _headers(self, context: ActionContext, payload: Any) -> dict[str, str]:
        secret = self.config.secret_header_names
        headers: dict[str, str] = {}
        for name, template in self.config.headers.items():
            try:
                value = render_value(template, f"headers.{name}", context, payload)
            except ActionError:
                if name.lower() in secret:  # the usual message would quote the secret
                    raise ActionError(f"headers.{name}: the template failed") from None
                raise
            text = as_text(value).replace("\r", " ").replace("\n", " ")
            if text:
                headers[name] = text
            else:
                context.effects.logs.append(("warning", f"headers.{name}: empty, not sent"))
        return headers


ACTIONS = (HttpCall,)
