"""A real runtime (SQLite store, ingest path, workflow stage) with one rule: a `login` event
runs a workflow that writes the event's customer id onto the profile and merges with every
profile holding the same one. Tests that need two requests of one person to merge use it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec

from tessera.model.common import DEFAULT_TENANT, utcnow
from tessera.model.workflow import Rule, Workflow, WorkflowGraph
from tessera.pipeline.request import IncomingBatch, IncomingEvent
from tessera.runtime import Runtime, build_runtime
from tessera.settings import load_settings

GRAPH = {
    "nodes": [
        {"id": "start", "action": "start"},
        {
            "id": "key",
            "action": "set_trait",
            "config": {"path": "profile@traits.customer_id", "value": "{{ event.properties.c }}"},
        },
        {"id": "merge", "action": "merge_profiles", "config": {"paths": ["traits.customer_id"]}},
    ],
    "edges": [{"source": "start", "target": "key"}, {"source": "key", "target": "merge"}],
}


@asynccontextmanager
async def merging_runtime(place: Path) -> AsyncIterator[Runtime]:
    running = build_runtime(load_settings(TESSERA_DATA_DIR=str(place / "data")))
    await running.start()
    graph = msgspec.convert(GRAPH, WorkflowGraph)
    now = utcnow()
    await running.storage.workflows.save(
        Workflow(
            tenant=DEFAULT_TENANT,
            id="merge",
            name="merge",
            created=now,
            draft=graph,
            deployed=graph,
            version=1,
        )
    )
    await running.storage.rules.save(
        Rule(
            tenant=DEFAULT_TENANT,
            id="r",
            name="r",
            event_type="login",
            workflow_id="merge",
            created=now,
        )
    )
    try:
        yield running
    finally:
        await running.stop()


def login(runtime: Runtime, session: str) -> IncomingBatch:
    """A login of customer 42 in ``session``."""
    assert runtime.default_source is not None
    return IncomingBatch(
        tenant=DEFAULT_TENANT,
        source=runtime.default_source,
        session_id=session,
        events=[IncomingEvent(type="login", properties={"c": "customer-42"})],
    )
