"""Consent rules applied after mapping: a consent type that is not revokable stays granted."""

from __future__ import annotations

import time
from typing import Any

from tessera.model.consent import ConsentType
from tessera.storage.ports import ConsentTypeStore


class ConsentRules:
    def __init__(self, store: ConsentTypeStore, *, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._cached: dict[str, tuple[float, dict[str, ConsentType]]] = {}

    async def _types(self, tenant: str) -> dict[str, ConsentType]:
        cached = self._cached.get(tenant)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        types = {consent.id: consent for consent in await self._store.list(tenant)}
        self._cached[tenant] = (now + self._ttl_s, types)
        return types

    def forget(self, tenant: str) -> None:
        self._cached.pop(tenant, None)

    async def enforce(
        self, tenant: str, before: dict[str, Any], document: dict[str, Any]
    ) -> list[str]:
        """Put back any consent this request revoked that its type says cannot be revoked."""
        after = document.get("consents") or {}
        if after == before:
            return []
        types = await self._types(tenant)
        warnings: list[str] = []
        for name, value in after.items():
            previous = before.get(name)
            consent = types.get(name)
            if (
                consent is not None
                and not consent.revokable
                and _granted(previous)
                and not _granted(value)
            ):
                after[name] = previous
                warnings.append(f"consent {name!r} cannot be revoked; it stays granted")
        return warnings


def _granted(value: Any) -> bool:
    return isinstance(value, dict) and value.get("granted") is True
