"""An event source: the key a website, app or webhook sends its events with."""

from __future__ import annotations

from datetime import datetime

import msgspec


class EventSource(msgspec.Struct):
    id: str
    tenant: str
    name: str
    created: datetime
    type: str = "rest"
    description: str = ""
    enabled: bool = True
    tags: list[str] = msgspec.field(default_factory=list)
