"""Consent rules applied after mapping: a consent type that is not revokable stays granted."""

from __future__ import annotations

from typing import Any

from tessera.core.loading_cache import LoadingCache
from tessera.model.consent import ConsentType
from tessera.storage.ports import ConsentTypeStore
from tessera.storage.write_through import WriteThrough


class ConsentRules(WriteThrough[ConsentType]):
    def __init__(self, store: ConsentTypeStore, *, ttl_s: float) -> None:
        self.store = store
        self._types: LoadingCache[str, dict[str, ConsentType]] = LoadingCache(
            self._load, ttl_s=ttl_s
        )

    async def _load(self, tenant: str) -> dict[str, ConsentType]:
        return {consent.id: consent for consent in await self.store.list(tenant)}

    async def types(self, tenant: str) -> dict[str, ConsentType]:
        return await self._types.get(tenant)

    def forget(self, tenant: str) -> None:
        self._types.forget(lambda key: key == tenant)

    async def enforce(
        self, tenant: str, before: dict[str, Any], document: dict[str, Any]
    ) -> list[str]:
        """Put back any consent this request revoked that its type says cannot be revoked."""
        after = document.get("consents") or {}
        if after == before:
            return []
        types = await self.types(tenant)
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


class ConsentCheck:
    """Whether a profile may be processed by a rule that needs consents: each needed consent is
    granted on the profile, or absent there with a type whose ``default`` is ``grant``. Consent
    types marked ``required`` are needed by every rule."""

    def __init__(self, rules: ConsentRules) -> None:
        self._rules = rules

    async def missing(self, tenant: str, consents: dict[str, Any], needed: list[str]) -> list[str]:
        types = await self._rules.types(tenant)
        wanted = list(dict.fromkeys(needed))
        wanted += [c.id for c in types.values() if c.required and c.enabled and c.id not in wanted]
        lacking: list[str] = []
        for consent_id in wanted:
            given = consents.get(consent_id)
            if given is None:
                consent_type = types.get(consent_id)
                if consent_type is not None and consent_type.default == "grant":
                    continue
                lacking.append(consent_id)
            elif not _granted(given):
                lacking.append(consent_id)
        return lacking
