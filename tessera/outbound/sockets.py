"""A TCP connection for clients that take a connected socket (SMTP): opened to an address the
policy allows, the host resolved once (see ``resolver.py``)."""

from __future__ import annotations

import asyncio
import socket

from tessera.outbound.policy import OutboundPolicy
from tessera.outbound.resolver import (
    MAX_ADDRESSES_TRIED,
    Resolver,
    checked_addresses,
    system_resolver,
)


async def checked_socket(
    host: str,
    port: int,
    policy: OutboundPolicy,
    *,
    timeout_s: float,
    resolver: Resolver = system_resolver,
) -> socket.socket:
    """A non-blocking socket connected to an allowed address of ``host``; the caller owns it.
    OutboundRefused when the policy refuses the host; OSError (Unresolvable among them) or
    TimeoutError when no connection could be made."""
    addresses = await checked_addresses(host, port, policy, timeout_s=timeout_s, resolver=resolver)
    loop = asyncio.get_running_loop()
    failure: OSError | TimeoutError | None = None
    for address in addresses[:MAX_ADDRESSES_TRIED]:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        connection = socket.socket(family, socket.SOCK_STREAM)
        connection.setblocking(False)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.sock_connect(connection, (str(address), port))
        except (OSError, TimeoutError) as exc:
            connection.close()
            failure = exc
            continue
        return connection
    assert failure is not None  # at least one address was tried
    raise failure
