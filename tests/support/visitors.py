"""The stores a VisitorDirectory needs besides the records, for tests that build one: the ids
of erased profiles (a real SQLite configuration store) and the profile ids Tessera issues."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tessera.identity.profile_ids import ProfileIds
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.stores import SqlErasedProfiles, SqlSchemaStore

TEST_IDS = ProfileIds(lambda: "a secret of the tests only")


@asynccontextmanager
async def erased_profiles(place: Path) -> AsyncIterator[SqlErasedProfiles]:
    place.mkdir(parents=True, exist_ok=True)
    engine = sqlite_engine(place)
    await SqlSchemaStore(engine).create_schema()
    try:
        yield SqlErasedProfiles(engine)
    finally:
        await engine.dispose()
