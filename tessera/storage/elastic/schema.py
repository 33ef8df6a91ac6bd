"""Templates: what every index Tessera creates looks like, before it exists.

Indices are never created one by one: the first bulk write into a partition that does not
exist yet creates it (Elasticsearch's automatic index creation), from the templates set here.

- One component template per kind (`<prefix>.<kind>.v1`) holds the shards, replicas and
  mapping of that kind, and the schema version in `_meta`. `create_schema` writes them, so a
  changed ELASTIC_INDEX_SHARDS applies to every index created afterwards (existing ones keep
  theirs: the shard count of an index is fixed at its creation).
- One index template per tenant and kind (`<prefix>.<tenant>.<kind>`) applies the component
  to that tenant's index names and, for the partitioned kinds, adds the read alias
  (`<prefix>.<tenant>.event`) to every partition at its creation. An alias name cannot be
  built from an index name by a template, so each tenant needs its own; the writer puts them
  the first time it meets a tenant (idempotent, once per tenant and process). Because the
  alias is part of the template, a partition created by any writer, at any time (also again
  after retention deleted it), is always readable through the alias.
- Generations (generations.py, reshard.py): the templates above exist per generation of a
  kind (`<prefix>.<kind>.v2`, `<prefix>.<tenant>.<kind>.v2`); those of the generation a kind
  writes are the ones put here, with the shape the reshard stored for it. Once a kind has left
  generation 1, one more template (`<prefix>.<kind>.left-generations`, of higher priority)
  matches the partitions of every earlier generation and creates them write-blocked: a writer
  that still plans with an old generation can then never create a partition nobody moves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from tessera.storage.elastic.generations import DEFAULT_TTL_S, GenerationView, KindGeneration
from tessera.storage.elastic.mappings import MAPPINGS
from tessera.storage.elastic.naming import FIRST_GENERATION, KINDS, PARTITIONED_KINDS, Names

SCHEMA_VERSION = 1
# Above the built-in templates of Elasticsearch (logs-*, metrics-* … use 100 to 200).
TEMPLATE_PRIORITY = 500
# Above every tenant's template: a partition of a left generation is always created blocked.
# One priority per kind: Elasticsearch refuses two templates of one priority whose patterns
# could both match a name, and `<prefix>.*.event.v1-*` and `<prefix>.*.session.v1-*` could.
FENCE_PRIORITY = {kind: TEMPLATE_PRIORITY + 100 + n for n, kind in enumerate(PARTITIONED_KINDS)}


@dataclass(frozen=True, slots=True)
class IndexShape:
    shards: int
    replicas: int


class ElasticSchema:
    def __init__(
        self,
        client: AsyncElasticsearch,
        names: Names,
        shapes: dict[str, IndexShape],
        *,
        generation_ttl_s: float = DEFAULT_TTL_S,
        refresh_intervals: dict[str, str] | None = None,
    ) -> None:
        missing = set(KINDS) - set(shapes)
        if missing:
            raise ValueError(f"no shards/replicas given for {sorted(missing)}")
        self._client = client
        self._names = names
        self._shapes = shapes
        # `refresh_interval` per kind; a kind not named keeps Elasticsearch's default.
        self._refresh_intervals = dict(refresh_intervals or {})
        self.generations = GenerationView(client, names, generation_ttl_s)
        # (tenant, kind, generation) whose index template this process has put.
        self._tenants: set[tuple[str, str, int]] = set()
        self._tenant_lock = asyncio.Lock()

    async def create_schema(self) -> None:
        """Write the component templates of every kind; safe to call again."""
        generations = await self.generations.current(fresh=True)
        work = []
        for kind in KINDS:
            state = generations.get(kind, KindGeneration(kind))
            work.append(self._put_component(kind, state.generation, self.shape_of(state)))
            if state.generation > FIRST_GENERATION:
                work.append(self.put_fence(kind, state.generation))
        await asyncio.gather(*work)
        await self._apply_refresh_intervals()

    async def _apply_refresh_intervals(self) -> None:
        """The refresh interval of each kind on its existing indices too: a changed setting
        (or an installation from before the setting) takes effect at the next start, not
        only on partitions created from now on."""
        for kind, interval in sorted(self._refresh_intervals.items()):
            await self._client.indices.put_settings(
                index=f"{self._names.prefix}.*.{kind}.v*",
                settings={"index": {"refresh_interval": interval}},
                allow_no_indices=True,
                expand_wildcards="open",
            )

    def shape_of(self, state: KindGeneration) -> IndexShape:
        """The settings' shape for generation 1, the one a reshard chose for a later one."""
        general = self._shapes[state.kind]
        if state.generation == FIRST_GENERATION or state.shards is None:
            return general
        replicas = state.replicas if state.replicas is not None else general.replicas
        return IndexShape(state.shards, replicas)

    async def installed_version(self) -> int | None:
        generation = await self.generations.write_generation("event")
        try:
            answer = await self._client.cluster.get_component_template(
                name=self._names.component_template("event", generation)
            )
        except NotFoundError:
            return None
        templates = answer.get("component_templates") or []
        if not templates:
            return None
        meta = templates[0]["component_template"].get("_meta") or {}
        version = meta.get("schema_version")
        return int(version) if version is not None else None

    async def ensure_tenants(self, tenants: set[str]) -> None:
        """Put the index templates (of the generations written now) not put by this process."""
        generations = await self.generations.current()
        wanted = {
            (tenant, kind, generations[kind].generation if kind in generations else 1)
            for tenant in tenants
            for kind in KINDS
        }
        if wanted <= self._tenants:
            return
        async with self._tenant_lock:
            new = sorted(wanted - self._tenants)
            await asyncio.gather(*(self._put_tenant(*key) for key in new))
            self._tenants.update(new)

    def tenants(self) -> set[str]:
        """The tenants this process has put index templates for (has written for)."""
        return {tenant for tenant, _, _ in self._tenants}

    async def put_generation(
        self, kind: str, generation: int, shape: IndexShape, tenants: set[str]
    ) -> None:
        """The component and the tenants' index templates of a new generation of a kind."""
        await self._put_component(kind, generation, shape)
        await asyncio.gather(*(self._put_tenant(t, kind, generation) for t in sorted(tenants)))
        self._tenants.update((tenant, kind, generation) for tenant in tenants)

    async def put_fence(self, kind: str, generation: int) -> None:
        """Create every partition of this kind's generations below `generation` write-blocked."""
        await self._client.indices.put_index_template(
            name=self._names.fence_template(kind),
            index_patterns=self._names.fence_patterns(kind, generation),
            priority=FENCE_PRIORITY[kind],
            template={
                "settings": {
                    "index": {
                        "number_of_shards": 1,
                        "number_of_replicas": 0,
                        "blocks": {"write": True},
                    }
                }
            },
            meta={"managed_by": "tessera", "writes_to_generation": generation},
        )

    async def drop_generation(self, kind: str, generation: int, tenants: set[str]) -> None:
        """Remove the templates of a generation no partition is created in any more."""
        for tenant in sorted(tenants):
            await self._client.options(ignore_status=404).indices.delete_index_template(
                name=self._names.index_template(tenant, kind, generation)
            )
        self._tenants = {key for key in self._tenants if key[1:] != (kind, generation)}
        await self._client.options(ignore_status=(400, 404)).cluster.delete_component_template(
            name=self._names.component_template(kind, generation)
        )

    async def drop_everything(self) -> None:
        """Delete every index and template of this prefix (tests, and `reset` tooling)."""
        pattern = self._names.everything()
        indices = await self._client.indices.get(
            index=pattern, expand_wildcards="all", allow_no_indices=True, ignore_unavailable=True
        )
        names = sorted(indices.body)
        # Names, not the wildcard: action.destructive_requires_name is on by default.
        for start in range(0, len(names), 50):
            await self._client.indices.delete(index=",".join(names[start : start + 50]))
        for name in await self._template_names(pattern):
            await self._client.indices.delete_index_template(name=name)
        components = await self._client.cluster.get_component_template()
        for item in components.get("component_templates") or []:
            if item["name"].startswith(self._names.prefix + "."):
                await self._client.cluster.delete_component_template(name=item["name"])
        self._tenants.clear()
        self.generations.forget()

    async def _template_names(self, pattern: str) -> list[str]:
        try:
            answer = await self._client.indices.get_index_template(name=pattern)
        except NotFoundError:
            return []
        return [item["name"] for item in answer.get("index_templates") or []]

    async def _put_component(self, kind: str, generation: int, shape: IndexShape) -> None:
        await self._client.cluster.put_component_template(
            name=self._names.component_template(kind, generation),
            template={
                "settings": {"index": self._index_settings(kind, shape)},
                "mappings": MAPPINGS[kind],
            },
            meta={"schema_version": SCHEMA_VERSION, "managed_by": "tessera"},
        )

    def _index_settings(self, kind: str, shape: IndexShape) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "number_of_shards": shape.shards,
            "number_of_replicas": shape.replicas,
        }
        if kind in self._refresh_intervals:
            settings["refresh_interval"] = self._refresh_intervals[kind]
        return settings

    async def _put_tenant(self, tenant: str, kind: str, generation: int) -> None:
        template: dict[str, Any] = {}
        if kind in PARTITIONED_KINDS:
            template["aliases"] = {self._names.alias(tenant, kind): {}}
        await self._client.indices.put_index_template(
            name=self._names.index_template(tenant, kind, generation),
            index_patterns=[self._names.index_pattern(tenant, kind, generation)],
            composed_of=[self._names.component_template(kind, generation)],
            priority=TEMPLATE_PRIORITY,
            template=template,
            meta={"schema_version": SCHEMA_VERSION, "managed_by": "tessera", "tenant": tenant},
        )
