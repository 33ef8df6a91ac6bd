"""Configuration that a process caches is changed through the object that caches it.

Rules, workflows, segments, destinations, sources, consent types and processing rules are read
on every request from short-lived caches (their directories). A change made by this process
must reach them at once, so the directory owns both the write and the invalidation: the API
saves and deletes through it and never through the store beside it
(tests/unit/test_configuration_writes.py keeps it so). Other processes see the change when their
cached copy expires (docs/settings.md, the `*_CACHE_SECONDS` settings).
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from tessera.storage.automation_ports import DocumentStore


class OfTenant(Protocol):
    @property
    def tenant(self) -> str: ...


D = TypeVar("D", bound=OfTenant)


class WriteThrough(Generic[D]):
    """Saves and deletes of a directory over a DocumentStore; the subclass says what to
    forget (its `forget(tenant)`)."""

    store: DocumentStore[D]

    def forget(self, tenant: str) -> None:
        raise NotImplementedError

    async def save(self, document: D) -> None:
        await self.store.save(document)
        self.forget(document.tenant)

    async def delete(self, tenant: str, document_id: str) -> bool:
        deleted = await self.store.delete(tenant, document_id)
        self.forget(tenant)
        return deleted
