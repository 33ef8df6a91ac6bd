"""Fixtures shared by the unit tests of workflow actions and the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import tessera.storage.sql.memory  # noqa: F401  (defines the kv_memory table)
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.memory import SqlKeyValueStore
from tessera.storage.sql.stores import SqlSchemaStore
from tessera.workflow.action import ActionServices


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[ActionServices]:
    """What actions use beyond the documents, for real: an HTTP client and the workflows'
    memory on a SQLite store in the test's folder."""
    engine = sqlite_engine(tmp_path / "config")
    await SqlSchemaStore(engine).create_schema()
    async with httpx.AsyncClient() as client:
        yield ActionServices(http=client, memory=SqlKeyValueStore(engine))
    await engine.dispose()
