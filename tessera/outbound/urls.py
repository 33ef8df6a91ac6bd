"""Reading URLs the way the outbound HTTP client does, so that what is checked is what is
called."""

from __future__ import annotations

import httpx

# (scheme, host, port): where a call goes.
Origin = tuple[str, str, int | None]


def parsed_url(url: str) -> httpx.URL | None:
    """``url`` as the HTTP client reads it; None when it cannot."""
    try:
        return httpx.URL(url)
    except httpx.InvalidURL:
        return None


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) of ``url``; None when it names no host."""
    parsed = parsed_url(url)
    if parsed is None or not parsed.host:
        return None
    return parsed.scheme, parsed.host, parsed.port
