"""Reading URLs the way the outbound HTTP client does, so that what is checked is what is
called; and the headers it sets from the URL and the body, which no configuration may give."""

from __future__ import annotations

import httpx

# (scheme, host, port): where a call goes.
Origin = tuple[str, str, int | None]
# Set by the client; a configured Host would let a template pick a virtual host behind the
# URL's server.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


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
