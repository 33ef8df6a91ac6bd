"""Everything the first request of a session tells about the visitor, as one plain dict for
``Session.device``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tessera.pipeline.enrich.device import describe_device
from tessera.pipeline.enrich.timezone import resolve_timezone
from tessera.pipeline.enrich.traffic import describe_visit_source


def enrich_new_session(context: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """Device, OS, browser, bot flag, UTM tags, click ids, referrer and time zone of a new
    session, from the tracker's request context and the request headers. Never raises.

    Example: {"device": {"type": "mobile", "name": "iPhone", "brand": "Apple", "model":
    "iPhone"}, "os": {"name": "iOS", "version": "17.4.1"}, "browser": {...}, "bot": False,
    "utm": {"source": "newsletter"}, "click_ids": {}, "referrer": {"type": "search", "url":
    "https://www.google.com/", "host": "www.google.com"}, "timezone": "Europe/Warsaw"}
    """
    page = _mapping(context.get("page"))
    page_url = _page_url(context.get("page"), page)
    referrer = _referrer(page.get("referrer", page.get("referer")))
    device = describe_device(_user_agent(context, headers))
    traffic = describe_visit_source(page_url, referrer)
    # to_builtins builds new dicts: the DeviceInfo is shared through the cache, the result is
    # the caller's to change.
    return {
        "device": msgspec.to_builtins(device.device),
        "os": msgspec.to_builtins(device.os),
        "browser": msgspec.to_builtins(device.browser),
        "bot": device.is_bot,
        "utm": dict(traffic.utm),
        "click_ids": dict(traffic.click_ids),
        "referrer": msgspec.to_builtins(traffic.referrer),
        "timezone": resolve_timezone(context),
    }


def _user_agent(context: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    # The header is what actually made the request; the tracker's copy is the fallback.
    value: Any = headers.get("user-agent")
    if value is None:
        # Headers normally arrive lower-cased; a hand-built mapping may not be.
        value = next((v for k, v in headers.items() if k.lower() == "user-agent"), None)
    if not isinstance(value, str) or not value.strip():
        value = _mapping(context.get("browser")).get("userAgent")
    return value if isinstance(value, str) else None


def _page_url(raw: Any, page: Mapping[str, Any]) -> str | None:
    value = raw if isinstance(raw, str) else page.get("url")
    return value if isinstance(value, str) else None


def _referrer(raw: Any) -> str | None:
    """A referrer sent as a URL, or as an object with its url and/or host."""
    if isinstance(raw, str):
        return raw
    found = _mapping(raw)
    for key in ("url", "host"):
        value = found.get(key)
        if isinstance(value, str) and value.strip():
            # A bare host reads as a scheme-less URL (see traffic.host_of).
            return value
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
