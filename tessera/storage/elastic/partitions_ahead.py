"""Partitions created before the first write needs them.

A partition created by the first bulk write into it (automatic index creation) joins the read
alias at once, but its primary shards start a moment later, and every search of the alias in
that moment fails: "all shards failed", 503 (50 to 100 ms on an idle one-node cluster, longer
on a busy one). Reads are whole or fail (reads.py), so that moment would be a burst of 503s:
on a fresh install in its first requests, and afterwards at every rollover (the first event
of a month, the first profile of a year…).

So the partitions a writer is about to need are created here, ahead, and waited for (an index
creation answers once its primary shards are started): the partition of every partitioned
kind that holds *now* and the one that holds *now + LEAD*, plus the tenant's single indices.
`prepare` runs at install and at every start (ElasticRecordBackend.create_schema), and then
every CHECK_INTERVAL_S in the background for each tenant this process has written for, so the
next partition exists long before its first write (a day ahead with the default LEAD; the
check runs hourly). Every process does it; creating an index that exists is harmless.

What is not foreseeable is still created by its first write: a partition of an event dated
months back, a new tenant's first partitions. Reads meeting such a starting partition try
again for READ_RETRY_BUDGET_S (reads.py) before they answer 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch

from tessera.errors import StorageUnavailable
from tessera.model.common import utcnow
from tessera.storage.elastic.naming import (
    PARTITIONED_KINDS,
    SINGLE_KINDS,
    Names,
    Partitioning,
    partition,
)
from tessera.storage.elastic.reads import error_type, explain
from tessera.storage.elastic.schema import ElasticSchema

log = logging.getLogger(__name__)

# How far ahead partitions exist: at least the writer's EVENT_FUTURE_BOUND (an event may be
# placed up to a day after its arrival), and the whole gap between two checks.
LEAD: Final = timedelta(days=1)
CHECK_INTERVAL_S: Final = 3600.0


class PartitionsAhead:
    """Creates the partitions of now and of now + LEAD, once at start and then periodically."""

    def __init__(
        self,
        client: AsyncElasticsearch,
        names: Names,
        schema: ElasticSchema,
        partitioning: dict[str, Partitioning],
        *,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self._client = client
        self._names = names
        self._schema = schema
        self._partitioning = partitioning
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def wanted(self, tenant: str, generations: dict[str, int], now: datetime) -> list[str]:
        """The indices a writer of this tenant may need before the next check."""
        names: list[str] = []
        for kind in PARTITIONED_KINDS:
            for moment in (now, now + LEAD):
                suffix = partition(moment, self._partitioning[kind])
                names.append(self._names.partition_index(tenant, kind, suffix, generations[kind]))
        names += [self._names.single_index(tenant, kind) for kind in SINGLE_KINDS]
        return list(dict.fromkeys(names))

    async def prepare(self, tenants: Iterable[str], now: datetime | None = None) -> list[str]:
        """Create what `wanted` names and does not exist yet; the names created."""
        tenants = set(tenants)
        await self._schema.ensure_tenants(tenants)
        states = await self._schema.generations.current()
        generations = {kind: states[kind].generation for kind in PARTITIONED_KINDS}
        moment = now or utcnow()
        wanted = [
            index
            for tenant in sorted(tenants)
            for index in self.wanted(tenant, generations, moment)
        ]
        created = await asyncio.gather(*map(self._create, wanted))
        return [index for index in created if index is not None]

    async def _create(self, index: str) -> str | None:
        # A few HEAD requests an hour: cheaper to ask than to remember (and to be wrong after
        # an operator deleted an index).
        if await self._client.indices.exists(index=index):
            return None
        try:
            # Shards, mapping and alias come from the templates; the answer waits for the
            # primary shards to start, so the alias never shows a starting partition.
            await self._client.indices.create(index=index)
        except ApiError as exc:
            if error_type(exc) != "resource_already_exists_exception":
                raise
            return None  # another process (or a first write) was quicker
        return index

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="tessera-elastic-partitions-ahead"
            )

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                created = await self.prepare(self._schema.tenants())
            except (TransportError, ApiError, StorageUnavailable) as exc:
                # The next check tries again; meanwhile a first write creates what it needs.
                log.warning("Elasticsearch: could not create partitions ahead: %s", explain(exc))
                continue
            if created:
                log.info("Elasticsearch: created partitions ahead: %s", ", ".join(created))
