"""Fixtures shared by the unit tests of workflow actions and the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import tessera.storage.sql.memory  # noqa: F401  (defines the kv_memory table)
from tessera.outbound.network import outbound_client
from tessera.outbound.policy import OutboundPolicy
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.memory import SqlKeyValueStore
from tessera.storage.sql.stores import SqlSchemaStore
from tessera.workflow.action import ActionServices


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[ActionServices]:
    """What actions use beyond the documents, for real: the outbound HTTP client with the
    development policy (loopback allowed, for the local stand-ins of tests/support/outside.py)
    and the workflows' memory on a SQLite store in the test's folder."""
    engine = sqlite_engine(tmp_path / "config")
    await SqlSchemaStore(engine).create_schema()
    policy = OutboundPolicy(allow_loopback=True)
    async with outbound_client(policy, timeout_s=10) as client:
        yield ActionServices(http=client, memory=SqlKeyValueStore(engine), outbound=policy)
    await engine.dispose()
