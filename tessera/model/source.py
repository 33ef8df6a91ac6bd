"""An event source: the key a website, app or webhook sends its events with."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

# public: a browser or an app; its id sits in every page, so anyone can send what it sends.
# server: a system of the operator's; its requests prove themselves with the source's key.
# What each may do: docs/security.md, "Trust model".
SourceTrust = Literal["public", "server"]


class EventSource(msgspec.Struct):
    id: str
    tenant: str
    name: str
    created: datetime
    type: str = "rest"
    description: str = ""
    enabled: bool = True
    tags: list[str] = msgspec.field(default_factory=list)
    trust: SourceTrust = "public"
    # A server source's key (shown once, when made): its requests send it as a bearer token,
    # or sign their body with it (webhooks). Never answered by the API.
    key: str | None = None
    # A public source's identify may merge the visitor into a profile that already holds the
    # identifier (off: the identifier stays that profile's, the visitor is not merged).
    public_merge: bool = False

    @property
    def trusted(self) -> bool:
        return self.trust == "server"
