"""Destinations as the ingest path and delayed workflow steps see them: plan the messages a
request's documents make (before its commit; workflow/held_work.py keeps them). ``dispatch.py``
is the implementation; this Protocol keeps the pipeline from importing it."""

from __future__ import annotations

from typing import Any, Protocol


class DestinationPlanner(Protocol):
    """Destinations as the ingest path sees them (``destinations/dispatch.py``)."""

    async def active(self, tenant: str) -> bool: ...

    async def plan(
        self,
        tenant: str,
        *,
        events: list[dict[str, Any]],
        profile: dict[str, Any] | None,
        session: dict[str, Any] | None,
        profile_changed: bool,
        request: str,
    ) -> list[Any]: ...
