"""What a destination must satisfy before it is stored (InvalidPayload, HTTP 422, naming why).

Everything that could fail at send time and can be known at save time is checked here, so the
worker only meets the failures of the other system: a URL that is not http(s), a condition that
does not parse, a template the sandbox refuses, a header name or value HTTP cannot carry.
"""

from __future__ import annotations

import re

import httpx

from tessera.core.reshaping import MAPPING_ROOTS, check_templates
from tessera.errors import InvalidPayload
from tessera.model.destination import Destination
from tessera.outbound.urls import RESERVED_HEADERS
from tessera.query import parse

# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
MAX_HEADER_VALUE = 8192


def check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidPayload(f"url: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidPayload("url: must start with http:// or https://")
    if not parsed.host:
        raise InvalidPayload("url: has no host")


def _check_headers(headers: dict[str, str], where: str) -> None:
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise InvalidPayload(f"{where}: {name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidPayload(f"{where}: {name!r} is set by Tessera and cannot be given")
        # Named by header only: the value may be a secret and is never echoed.
        if len(value) > MAX_HEADER_VALUE or any(c in value for c in "\r\n\x00"):
            raise InvalidPayload(
                f"{where}: the value of {name!r} is longer than {MAX_HEADER_VALUE} "
                "characters or holds a line break"
            )


def check_destination(destination: Destination) -> None:
    check_url(destination.url)
    if destination.on == "profile" and destination.event_types:
        raise InvalidPayload("event_types: only for destinations with on='event'")
    if any(not event_type for event_type in destination.event_types):
        raise InvalidPayload("event_types: an event type is empty")
    _check_headers(destination.headers, "headers")
    _check_headers(destination.secret_headers, "secret_headers")
    both = {name.lower() for name in destination.headers} & {
        name.lower() for name in destination.secret_headers
    }
    if both:
        raise InvalidPayload(
            f"headers and secret_headers both name {', '.join(sorted(both))}; give each once"
        )
    if destination.condition is not None:
        parse(destination.condition)
    check_templates(destination.template, "template", MAPPING_ROOTS)
