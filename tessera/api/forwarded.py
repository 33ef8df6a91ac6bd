"""The client's address behind reverse proxies (``TESSERA_TRUSTED_PROXIES``).

`X-Forwarded-For` is a list every proxy appends the address it was connected from to, so
only its right end is written by proxies; everything to the left of the first address not
of a trusted proxy came from the client and may be anything. Read from the right, the first
address that is not a trusted proxy's is the client's: the proxy to its right saw it connect.

With no trusted proxy (the default) the header is ignored: anyone could send it. The address
found replaces the connection's peer in the ASGI scope, for everything after this layer
(stored events, logs); it is always one IP address, never the header's text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from starlette.types import Receive, Scope, Send

from tessera.settings import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_FORWARDED_FOR = b"x-forwarded-for"
_FORWARDED_PROTO = b"x-forwarded-proto"
_SCHEMES = frozenset({"http", "https"})


def parse_address(text: str) -> IPAddress | None:
    """One address of the header: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`
    or `[2001:db8::1]:5678`; None for anything else (a name, `unknown`, garbage)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; an IPv6 address has two or more colons
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def forwarded_client(
    peer: IPAddress, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> IPAddress:
    """The client's address: ``peer`` unless it is a trusted proxy; then, walking the header
    from the right past trusted proxies, the first other address. An entry that is no IP
    address ends the walk at the last hop known to be real (the proxy to its right)."""

    def is_trusted(address: IPAddress) -> bool:
        return any(address in network for network in trusted)

    client = peer
    if not is_trusted(peer):
        return client
    entries = [entry for header in forwarded_for for entry in header.split(",")]
    for entry in reversed(entries):
        address = parse_address(entry)
        if address is None:
            return client
        client = address
        if not is_trusted(address):
            return client
    return client  # every hop was a trusted proxy: the left-most is the origin


class ForwardedClient:
    """ASGI layer: the scope's ``client`` becomes the client behind trusted proxies (and its
    ``scheme`` the one they were reached with)."""

    def __init__(self, app: Any, *, trusted: Sequence[IPNetwork]) -> None:
        self._app = app
        self._trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._trusted and scope["type"] == "http":
            self._rewrite(scope)
        await self._app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        peer_text = (scope.get("client") or (None, 0))[0]
        peer = parse_address(peer_text) if isinstance(peer_text, str) else None
        if peer is None or not any(peer in network for network in self._trusted):
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        forwarded = [value.decode("latin-1") for key, value in headers if key == _FORWARDED_FOR]
        client = forwarded_client(peer, forwarded, self._trusted)
        scope["client"] = (str(client), 0)
        proto = [value.decode("latin-1") for key, value in headers if key == _FORWARDED_PROTO]
        if proto:
            # The right-most value: the one the trusted peer wrote (as for the address).
            scheme = proto[-1].split(",")[-1].strip().lower()
            if scheme in _SCHEMES:
                scope["scheme"] = scheme
