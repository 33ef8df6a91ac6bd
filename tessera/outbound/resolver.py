"""Resolving a host once and judging every address it has, before any connection is made.

The addresses answered here are the ones connected to (``network.py``, ``sockets.py``): a name
is never resolved a second time between the check and the connection, so a DNS server that
answers a public address first and a private one next (DNS rebinding) gains nothing. A name with
several addresses is refused when any of them is: an attacker's DNS may mix them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from tessera.outbound.policy import IPAddress, OutboundPolicy, OutboundRefused

# host, port → the addresses the name stands for, in the order to try them.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
# A name with many addresses: the first few are tried, each with the full connect timeout.
MAX_ADDRESSES_TRIED = 3


class Unresolvable(OSError):
    """The host has no address (unknown name, DNS down, no answer in time)."""


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The operating system's resolver (getaddrinfo, off the event loop)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"{host}: cannot be resolved ({exc})") from None
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, address in infos:
        parsed = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        if parsed not in found:
            found.append(parsed)
    return found


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is written as one (``[::1]`` included)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def checked_addresses(
    host: str,
    port: int,
    policy: OutboundPolicy,
    *,
    timeout_s: float | None,
    resolver: Resolver = system_resolver,
) -> list[IPAddress]:
    """The addresses of ``host``, every one allowed by ``policy``. OutboundRefused naming the
    host and the address otherwise; Unresolvable when there is none (within ``timeout_s``)."""
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            async with asyncio.timeout(timeout_s):
                addresses = await resolver(host, port)
        except TimeoutError:
            raise Unresolvable(f"{host}: no DNS answer within {timeout_s:g} s") from None
        if not addresses:
            raise Unresolvable(f"{host}: the name has no address")
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            where = f"{address}" if literal is not None else f"{host} resolves to {address}, which"
            raise OutboundRefused(f"{where} is {reason}")
    return addresses
