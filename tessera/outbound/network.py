"""The outbound HTTP client: every connection it opens goes to an address the policy allows.

The check sits where the connection is made, in the network backend of the client's connection
pool: the host is resolved once (``resolver.checked_addresses``) and the TCP connection opened
to the checked address itself. The pool still knows the connection by the URL's host, so TLS
gets the right server name (SNI, certificate check), the ``Host`` header is the URL's, and a
kept-alive connection is only reused for the host it was opened for. A redirect a caller
follows, or a plugin's request to any URL, opens its connections the same way, so none of
them can reach a refused address.

The client ignores proxy settings and ``.netrc`` from the environment (``trust_env=False``):
a proxy would connect on Tessera's behalf where the policy cannot see, and ``.netrc`` would add
credentials to requests for hosts an API user chose.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import httpcore
import httpx

from tessera.outbound.policy import OutboundPolicy, OutboundRefused
from tessera.outbound.resolver import (
    MAX_ADDRESSES_TRIED,
    Resolver,
    Unresolvable,
    checked_addresses,
    system_resolver,
)

# What any request of the shared client may use at once (a plugin's, a workflow's, deliveries).
POOL_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50)

# httpcore's own type of a socket option (setsockopt's arguments).
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the policy allows, resolving each host once."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await checked_addresses(
                host, port, self._policy, timeout_s=timeout, resolver=self._resolver
            )
        except Unresolvable as exc:
            raise httpcore.ConnectError(str(exc)) from None
        options = list(socket_options or ())  # an iterable may be read only once
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses[:MAX_ADDRESSES_TRIED]:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # at least one address was tried
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("a Unix socket is not a call to another system")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with a connection pool whose network backend is guarded.

    httpx has no public way to give its transport a network backend, so the pool it built is
    replaced by one like it; tests/unit/test_outbound.py fails if an httpx upgrade stops this
    pool from being the one used."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver = system_resolver,
        limits: httpx.Limits = POOL_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context if ssl_context is not None else httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(policy, resolver=resolver),
        )


def outbound_client(
    policy: OutboundPolicy,
    *,
    timeout_s: float,
    resolver: Resolver = system_resolver,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """The client for calls to other systems (destinations, workflow actions, plugins).
    ``ssl_context``: the certificates to trust (default: the usual public ones)."""
    return httpx.AsyncClient(
        transport=GuardedTransport(policy, resolver=resolver, ssl_context=ssl_context),
        timeout=timeout_s,
        trust_env=False,
        follow_redirects=False,
    )
