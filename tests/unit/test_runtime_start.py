"""A runtime whose start fails half-way stops again what it had started, so a failed start
leaves no background task running and no connection open (the lifespan then reports the error
and the process ends cleanly)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tessera.ops.install import MERGE_SALT_KEY
from tessera.runtime import build_runtime
from tessera.settings import load_settings
from tessera.storage.sql.engine import CONFIG_FILE_NAME


def _background_tasks() -> set[str]:
    current = asyncio.current_task()
    return {task.get_name() for task in asyncio.all_tasks() if task is not current}


async def test_a_start_that_fails_half_way_stops_what_it_started(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # A first start installs the schema; with AUTO_PROFILE_MERGING set it keeps no salt.
    first = build_runtime(load_settings(TESSERA_DATA_DIR=str(data), AUTO_PROFILE_MERGING="s" * 32))
    await first.start()
    await first.stop()
    # The configuration file then refuses to keep a salt: the next start fails at that step,
    # after the outbox delivery, held work and housekeeping loops have started.
    with sqlite3.connect(data / CONFIG_FILE_NAME) as database:
        database.execute(
            f"CREATE TRIGGER refuse_the_salt BEFORE INSERT ON schema_meta "
            f"WHEN NEW.key = '{MERGE_SALT_KEY}' BEGIN SELECT RAISE(ABORT, 'damaged file'); END"
        )
    before = _background_tasks()
    runtime = build_runtime(load_settings(TESSERA_DATA_DIR=str(data)))
    with pytest.raises(Exception, match="damaged file"):
        await runtime.start()
    assert not runtime.ready
    # Everything started before the failing step was stopped again: the background loops...
    assert _background_tasks() <= before, _background_tasks() - before
    # ...the outbound HTTP client, and the stores (their engine is disposed).
    assert runtime.http.is_closed
    with sqlite3.connect(data / CONFIG_FILE_NAME) as database:
        database.execute("DROP TRIGGER refuse_the_salt")
    again = build_runtime(load_settings(TESSERA_DATA_DIR=str(data)))
    await again.start()  # nothing of the failed start stands in the way of the next
    assert again.ready
    await again.stop()


async def test_a_runtime_that_started_still_stops_as_before(tmp_path: Path) -> None:
    runtime = build_runtime(load_settings(TESSERA_DATA_DIR=str(tmp_path / "data")))
    await runtime.start()
    assert runtime.ready
    assert {"tessera-housekeeping", "tessera-held-work"} <= _background_tasks()
    assert not runtime.http.is_closed
    await runtime.stop()
    assert not {"tessera-housekeeping", "tessera-held-work"} & _background_tasks()
    assert runtime.http.is_closed
