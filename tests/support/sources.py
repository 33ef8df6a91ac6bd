"""Event sources for black-box tests: a public one is what a website uses; a server one is the
operator's own system, whose requests carry the source's key (docs/security.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class ServerSource:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_server_source(api: httpx.Client, name: str, **fields: Any) -> ServerSource:
    answer = api.post("/event-source", json={"name": name, "trust": "server", **fields})
    assert answer.status_code in (200, 201), answer.text
    body = answer.json()
    return ServerSource(body["id"], body["key"])


def keyed(client: httpx.Client, source: ServerSource) -> httpx.Client:
    """``client`` sending the source's key with every request (it keeps its base URL)."""
    client.headers.update(source.headers)
    return client
