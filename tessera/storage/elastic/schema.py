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
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from tessera.storage.elastic.mappings import MAPPINGS
from tessera.storage.elastic.naming import KINDS, PARTITIONED_KINDS, Names

SCHEMA_VERSION = 1
# Above the built-in templates of Elasticsearch (logs-*, metrics-* … use 100 to 200).
TEMPLATE_PRIORITY = 500


@dataclass(frozen=True, slots=True)
class IndexShape:
    shards: int
    replicas: int


class ElasticSchema:
    def __init__(
        self, client: AsyncElasticsearch, names: Names, shapes: dict[str, IndexShape]
    ) -> None:
        missing = set(KINDS) - set(shapes)
        if missing:
            raise ValueError(f"no shards/replicas given for {sorted(missing)}")
        self._client = client
        self._names = names
        self._shapes = shapes
        self._tenants: set[str] = set()
        self._tenant_lock = asyncio.Lock()

    async def create_schema(self) -> None:
        """Write the component templates of every kind; safe to call again."""
        await asyncio.gather(*(self._put_component(kind) for kind in KINDS))

    async def installed_version(self) -> int | None:
        try:
            answer = await self._client.cluster.get_component_template(
                name=self._names.component_template("event")
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
        """Put the index templates of tenants not met before by this process."""
        if tenants <= self._tenants:
            return
        async with self._tenant_lock:
            new = sorted(tenants - self._tenants)
            await asyncio.gather(
                *(self._put_tenant(tenant, kind) for tenant in new for kind in KINDS)
            )
            self._tenants.update(new)

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

    async def _template_names(self, pattern: str) -> list[str]:
        try:
            answer = await self._client.indices.get_index_template(name=pattern)
        except NotFoundError:
            return []
        return [item["name"] for item in answer.get("index_templates") or []]

    async def _put_component(self, kind: str) -> None:
        shape = self._shapes[kind]
        await self._client.cluster.put_component_template(
            name=self._names.component_template(kind),
            template={
                "settings": {
                    "index": {
                        "number_of_shards": shape.shards,
                        "number_of_replicas": shape.replicas,
                    }
                },
                "mappings": MAPPINGS[kind],
            },
            meta={"schema_version": SCHEMA_VERSION, "managed_by": "tessera"},
        )

    async def _put_tenant(self, tenant: str, kind: str) -> None:
        template: dict[str, Any] = {}
        if kind in PARTITIONED_KINDS:
            template["aliases"] = {self._names.alias(tenant, kind): {}}
        await self._client.indices.put_index_template(
            name=self._names.index_template(tenant, kind),
            index_patterns=[self._names.index_pattern(tenant, kind)],
            composed_of=[self._names.component_template(kind)],
            priority=TEMPLATE_PRIORITY,
            template=template,
            meta={"schema_version": SCHEMA_VERSION, "managed_by": "tessera", "tenant": tenant},
        )
