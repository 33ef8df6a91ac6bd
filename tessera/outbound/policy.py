"""Which addresses calls to other systems may reach: the server-side request forgery policy.

Destinations, ``http_call``, ``send_email`` and ``send_slack_message`` connect to hosts an API
user chose. Without a policy, anyone holding an API token could make the server call what only
it can reach: a cloud metadata service (169.254.169.254), an admin port on loopback, a database
on the private network. Every address a call would connect to is judged here:

- link-local (169.254.0.0/16, fe80::/10) and addresses that are not publicly routed (0.0.0.0/8,
  multicast, reserved, documentation and benchmarking ranges …): refused;
- private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7): refused unless
  ``TESSERA_OUTBOUND_ALLOW_PRIVATE``;
- loopback (127/8, ::1): allowed in development, refused in production unless
  ``TESSERA_OUTBOUND_ALLOW_LOOPBACK``;
- any of them inside a network of ``TESSERA_OUTBOUND_ALLOW_CIDRS``: allowed.

An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, NAT64, 6to4) is judged
as that IPv4 address. The tables are written out rather than taken from ``ipaddress``'s
``is_private``, whose meaning changed between Python versions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from tessera.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


LOOPBACK = _networks("127.0.0.0/8", "::1/128")
PRIVATE = _networks(
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # shared address space (carrier-grade NAT, many cloud-internal networks)
    "fc00::/7",  # unique local
)
LINK_LOCAL = _networks("169.254.0.0/16", "fe80::/10")
NOT_ROUTED = _networks(
    "0.0.0.0/8",  # "this network": connecting to 0.0.0.0 reaches the machine itself
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
    "::/128",
    "100::/64",
    "2001::/32",  # Teredo: the IPv4 end is hidden
    "2001:db8::/32",
    "64:ff9b:1::/48",
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
)
# IPv6 ranges whose last 32 bits are an IPv4 address the packets end up at.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

_HINTS = {
    "loopback": "TESSERA_OUTBOUND_ALLOW_LOOPBACK=yes",
    "private": "TESSERA_OUTBOUND_ALLOW_PRIVATE=yes",
}


class OutboundRefused(httpx.TransportError):
    """A call the policy refuses. An httpx transport error, so that every caller that handles a
    failed connection (plugins included) handles this too; Tessera's own callers tell it
    apart: it is never retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused by the outbound policy: {reason}")
        self.reason = reason


def _carried_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for, if it carries one; else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _inside(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def kind_of(address: IPAddress) -> str | None:
    """``loopback``, ``private``, ``link-local``, ``not publicly routed``, or None (public)."""
    for kind, networks in (
        ("loopback", LOOPBACK),
        ("private", PRIVATE),
        ("link-local", LINK_LOCAL),
        ("not publicly routed", NOT_ROUTED),
    ):
        if _inside(address, networks):
            return kind
    return None


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    allow_loopback: bool
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(
            allow_loopback=settings.outbound_loopback_allowed,
            allow_private=settings.outbound_allow_private,
            allowed_networks=settings.outbound_allowed_networks,
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why a call may not connect to ``address`` ("a private address (allow it with
        …)"), or None when it may."""
        carried = _carried_ipv4(address)
        if _inside(address, self.allowed_networks) or _inside(carried, self.allowed_networks):
            return None
        kind = kind_of(carried) or kind_of(address)
        if kind is None:
            return None
        if (kind == "loopback" and self.allow_loopback) or (
            kind == "private" and self.allow_private
        ):
            return None
        allow = _HINTS.get(kind, "")
        hint = f"{allow} or " if allow else ""
        article = "an" if kind[0] in "aeiou" else "a"
        return f"{article} {kind} address (allow it with {hint}TESSERA_OUTBOUND_ALLOW_CIDRS)"
