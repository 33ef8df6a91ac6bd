"""Live segmentation: the tenant's segments evaluated on a profile each time a request changes it.

The ingest path calls ``apply`` once per request, after workflows ran, with the profile
document it is about to store; no configuration is read per event: the tenant's segments are
cached with their parsed conditions for ``ttl_s`` seconds (changes made through this server's
API call ``forget`` and apply at once; another server's changes show within ``ttl_s``).

Live evaluation adds and removes only the ids of ENABLED segments that apply to the request's
event types. It never removes the id of a disabled or deleted segment: disabling or deleting a
segment starts a re-segmentation job, which takes the id off every profile in one pass, with
the ``segment-left`` events recorded. Doing it here too would spread those removals over
whichever profiles happen to be seen first, and a manually added id (a workflow's
``add_segment``) that looks like an old segment's would vanish with no one asking for it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from tessera.core.loading_cache import LoadingCache
from tessera.errors import InvalidPayload
from tessera.model.segment import Segment
from tessera.query import Condition, parse
from tessera.segments.membership import LiveSegment, SegmentChange, update_membership
from tessera.storage.automation_ports import DocumentStore
from tessera.storage.write_through import WriteThrough

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TenantSegments:
    """What one load of the tenant's segments gives."""

    # Enabled segments, oldest first.
    live: tuple[LiveSegment, ...]
    # Every defined segment, enabled or not: id → name.
    names: dict[str, str]
    disabled: frozenset[str]

    def find(self, segment_id: str) -> LiveSegment | None:
        return next((s for s in self.live if s.id == segment_id), None)


class LiveSegments(WriteThrough[Segment]):
    def __init__(self, store: DocumentStore[Segment], ttl_s: float) -> None:
        self.store = store
        self._tenants: LoadingCache[str, TenantSegments] = LoadingCache(self._load, ttl_s=ttl_s)
        # Parsed conditions per tenant, by (segment id, version): a reload after the time to
        # live does not parse again what did not change.
        self._parsed: dict[str, dict[tuple[str, int], Condition]] = {}

    async def apply(
        self, tenant: str, profile: dict[str, Any], event_types: Collection[str]
    ) -> SegmentChange:
        """Evaluate the segments that apply to these event types on the profile document and
        update ``profile["segments"]`` in place; answer what it entered and left."""
        segments = await self.for_tenant(tenant)
        applicable = [s for s in segments.live if s.applies_to(event_types)]
        if not applicable:
            return SegmentChange()
        return update_membership(profile, applicable)

    async def segment_names(self, tenant: str) -> dict[str, str]:
        """Every defined segment of the tenant (enabled or not): id → name."""
        return (await self.for_tenant(tenant)).names

    def forget(self, tenant: str) -> None:
        self._tenants.forget(lambda key: key == tenant)

    async def for_tenant(self, tenant: str) -> TenantSegments:
        return await self._tenants.get(tenant)

    async def _load(self, tenant: str) -> TenantSegments:
        stored = await self.store.list(tenant)
        previous = self._parsed.get(tenant, {})
        parsed: dict[tuple[str, int], Condition] = {}
        live: list[LiveSegment] = []
        for segment in stored:
            if not segment.enabled:
                continue
            key = (segment.id, segment.version)
            condition = previous.get(key)
            if condition is None:
                try:
                    condition = parse(segment.condition)
                except InvalidPayload as exc:
                    # The API refuses such conditions; one stored some other way is skipped.
                    log.warning("segment %r cannot be evaluated: %s", segment.id, exc.message)
                    continue
            parsed[key] = condition
            live.append(
                LiveSegment(
                    id=segment.id,
                    name=segment.name,
                    version=segment.version,
                    condition=condition,
                    event_types=frozenset(segment.event_types),
                )
            )
        loaded = TenantSegments(
            live=tuple(live),
            names={s.id: s.name for s in stored},
            disabled=frozenset(s.id for s in stored if not s.enabled),
        )
        self._parsed[tenant] = parsed
        return loaded
