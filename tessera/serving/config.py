"""uvicorn's configuration, with what Tessera's HTTP protocol needs besides."""

from __future__ import annotations

from typing import Any

import uvicorn


class ServerConfig(uvicorn.Config):
    """``uvicorn.Config`` plus the header deadline of ``serving/header_deadline.py``. uvicorn
    pickles its configuration into every API process it spawns, so what the protocol needs
    travels in it rather than in a class made per settings (which could not be pickled)."""

    def __init__(self, app: Any, *, header_timeout_s: float, **options: Any) -> None:
        super().__init__(app, **options)
        self.header_timeout_s = header_timeout_s
