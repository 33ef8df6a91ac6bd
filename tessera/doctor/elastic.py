"""`tessera doctor`'s checks of the Elasticsearch cluster (ELASTIC_HOST): its health, the
shards and replicas its templates give new indices, and partitions still holding the search
field of an earlier version. Imported only when the records are on Elasticsearch. They read only.
"""

from __future__ import annotations

from elasticsearch import NotFoundError

from tessera.doctor.report import Check, failed, ok, warning
from tessera.doctor.stores import CREATED_BY_INSTALL
from tessera.storage.elastic.backend import ElasticRecordBackend
from tessera.storage.elastic.generations import KindGeneration
from tessera.storage.elastic.legacy import legacy_partitions
from tessera.storage.elastic.naming import KINDS
from tessera.storage.elastic.schema import IndexShape

CLUSTER = "elasticsearch cluster"
SHAPES = "elasticsearch index settings"
REPRESENTATION = "elasticsearch search representation"


async def cluster_health(backend: ElasticRecordBackend) -> Check:
    health = await backend.client.cluster.health()
    status = str(health["status"])
    nodes = int(health["number_of_data_nodes"])
    unassigned = int(health["unassigned_shards"])
    facts = {"health": status, "data_nodes": nodes, "unassigned_shards": unassigned}
    where = f"cluster {health['cluster_name']} at ELASTIC_HOST={backend.connection.where()}"
    if status == "green":
        return ok(CLUSTER, f"{where}: green, {nodes} data node(s)", **facts)
    if status == "yellow":
        # The settings' replicas, whatever generation a kind writes.
        replicas = max(backend.schema.shape_of(KindGeneration(kind)).replicas for kind in KINDS)
        why = (
            f"{nodes} data node(s) cannot hold {replicas} replica(s) beside each primary "
            "(ELASTIC_INDEX_REPLICAS, TESSERA_ELASTIC_*_REPLICAS): add nodes or lower them"
            if nodes <= replicas
            else "replicas are still being copied, or a node left"
        )
        return warning(
            CLUSTER,
            f"{where}: yellow, {unassigned} replica shard(s) unassigned; {why}. Reads and writes "
            "work, but losing a node may lose records",
            **facts,
        )
    return failed(
        CLUSTER,
        f"{where}: {status}, {unassigned} shard(s) unassigned, primaries among them: some "
        "records can be neither read nor written",
        **facts,
    )


async def index_settings(backend: ElasticRecordBackend) -> Check:
    """The shards and replicas the templates give new indices, against the settings (or, after
    a reshard, the shape chosen for the generation a kind writes)."""
    generations = await backend.schema.generations.current(fresh=True)
    try:
        answer = await backend.client.cluster.get_component_template(
            name=f"{backend.names.prefix}.*"
        )
    except NotFoundError:
        return warning(SHAPES, f"no index templates yet; {CREATED_BY_INSTALL}")
    templates = {
        item["name"]: item["component_template"]["template"].get("settings", {}).get("index", {})
        for item in answer.get("component_templates") or []
    }
    shown, different, missing = [], [], []
    for kind in KINDS:
        state = generations.get(kind, KindGeneration(kind))
        wanted = backend.schema.shape_of(state)
        index = templates.get(backend.names.component_template(kind, state.generation))
        if index is None:
            missing.append(kind)
            continue
        found = IndexShape(int(index["number_of_shards"]), int(index["number_of_replicas"]))
        shown.append(f"{kind} {found.shards}/{found.replicas}")
        if found != wanted:
            different.append(
                f"{kind} {found.shards}/{found.replicas} where the settings say "
                f"{wanted.shards}/{wanted.replicas}"
            )
    if missing:
        return warning(SHAPES, f"no template for {', '.join(missing)}; {CREATED_BY_INSTALL}")
    if different:
        return warning(
            SHAPES,
            f"templates give new indices shards/replicas {'; '.join(different)}: the next "
            "`tessera install` or `tessera serve` puts the settings' ones (existing indices keep "
            "their shard count: `tessera storage reshard`)",
        )
    return ok(SHAPES, f"new indices get the settings' shards/replicas: {', '.join(shown)}")


async def search_representation(backend: ElasticRecordBackend) -> Check:
    """Partitions still holding the nested search field of an earlier version (legacy.py):
    conditions and sorts over their kind are refused until a reshard re-encodes them."""
    legacy = await legacy_partitions(backend.client, f"{backend.names.prefix}.*")
    if not legacy:
        return ok(REPRESENTATION, "every index has the current search fields")
    kinds = sorted({kind for kind in KINDS for name in legacy if f".{kind}." in name})
    return warning(
        REPRESENTATION,
        f"{len(legacy)} index(es) still hold the nested search field of an earlier version "
        f"({', '.join(legacy[:3])}{' …' if len(legacy) > 3 else ''}): searches with a condition "
        f"or a sort over {', '.join(kinds)} answer 503 until `tessera storage reshard --kind "
        "KIND --shards N` has re-encoded them (docs/distributed.md)",
        indices=len(legacy),
    )
