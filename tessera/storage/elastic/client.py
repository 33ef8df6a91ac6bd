"""The Elasticsearch client: where the cluster is, how to log in, and how JSON is read.

Documents are encoded and decoded with msgspec, as the embedded store does: it keeps integers
of any size exact (a property of 12345678901234567890123 comes back as that integer, not as
a float) and is several times faster than the standard library on large bulk bodies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, AsyncElasticsearch
from elasticsearch.serializer import JsonSerializer, NdjsonSerializer

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class _MsgspecJson(JsonSerializer):
    def json_dumps(self, data: Any) -> bytes:
        return _encoder.encode(data)

    def json_loads(self, data: bytes) -> Any:
        return _decoder.decode(data)


class _MsgspecNdjson(NdjsonSerializer):
    def json_dumps(self, data: Any) -> bytes:
        return _encoder.encode(data)

    def json_loads(self, data: bytes) -> Any:
        return _decoder.decode(data)


@dataclass(frozen=True, slots=True)
class ElasticConnection:
    hosts: tuple[str, ...]
    username: str | None = None
    # Never logged: __repr__ leaves it out.
    password: str | None = None
    verify_certs: bool = True
    # Serving uses TESSERA_ELASTIC_TIMEOUT_SECONDS; the maintenance commands keep this default.
    request_timeout_s: float = 30.0
    # Sent again after a failed connection (to another node where there is one, or a 429,
    # 502, 503 or 504 answer); never after a timeout, which would make one request wait
    # several timeouts (TESSERA_ELASTIC_RETRIES).
    retries: int = 2

    def __repr__(self) -> str:
        return f"ElasticConnection(hosts={self.hosts!r}, username={self.username!r})"

    @staticmethod
    def from_hosts(text: str, **options: Any) -> ElasticConnection:
        """From ELASTIC_HOST's comma-separated URLs."""
        hosts = tuple(part.strip() for part in text.split(",") if part.strip())
        if not hosts:
            raise ValueError("ELASTIC_HOST: no URL given")
        return ElasticConnection(hosts=hosts, **options)

    def where(self) -> str:
        """The cluster's URLs without credentials, for messages."""
        return ", ".join(_without_credentials(host) for host in self.hosts)


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest = rest.rpartition("@")[2]
    return f"{scheme}://{rest}" if scheme else rest


def open_client(connection: ElasticConnection) -> AsyncElasticsearch:
    options: dict[str, Any] = {}
    if connection.username is not None:
        options["basic_auth"] = (connection.username, connection.password or "")
    hosts: Sequence[str] = list(connection.hosts)
    return AsyncElasticsearch(
        hosts,
        verify_certs=connection.verify_certs,
        request_timeout=connection.request_timeout_s,
        max_retries=connection.retries,
        retry_on_timeout=False,
        # The client's default puts a node that failed a few times aside for up to 30 s: with
        # one node (or a small cluster) a short hiccup would turn into half a minute of 503s.
        # Tessera's writer retries on its own; come back to a node within a second.
        max_dead_node_backoff=1.0,
        serializers={
            "application/json": _MsgspecJson(),
            "application/x-ndjson": _MsgspecNdjson(),
        },
        **options,
    )


# Answers that say the cluster cannot serve now: too many requests, or a server (or a proxy in
# front of it) failing or unavailable.
OVERLOADED = 429


def is_outage(error: BaseException) -> bool:
    """An error that means the cluster is away, slow or overloaded (worth a retry later): no
    connection, no answer in time, 429 or 5xx. A 4xx refusal of the request is not one."""
    if isinstance(error, TransportConnectionError | ConnectionTimeout):
        return True
    if isinstance(error, ApiError):
        return error.meta.status == OVERLOADED or error.meta.status >= 500
    return False
