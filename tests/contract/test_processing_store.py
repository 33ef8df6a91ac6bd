"""The ProcessingRuleStore contract, run against every backend that implements it.

Built like the config suites in conftest.py: an opener per backend takes a fresh place and
yields the real store with its schema installed through the backend's SchemaStore (so these
tests also prove the rules' tables are created with the others). Adding a backend means adding
an opener to ``PROCESSING_BACKENDS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from tessera.model.processing import (
    FieldMapping,
    MappingRule,
    ProcessingRule,
    ReshapeRule,
    ValidationRule,
)
from tessera.storage.config_database import config_schema_store
from tessera.storage.ports import SchemaStore
from tessera.storage.processing_ports import ProcessingRuleStore
from tessera.storage.sql.engine import sqlite_engine
from tessera.storage.sql.processing import SqlProcessingRuleStore
from tessera.storage.sql.stores import SqlSchemaStore
from tests.support.mariadb import mariadb_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class ProcessingBackend:
    name: str
    rules: ProcessingRuleStore
    schema: SchemaStore


ProcessingOpener = Callable[[Path], AbstractAsyncContextManager[ProcessingBackend]]


@asynccontextmanager
async def sqlite_processing(place: Path) -> AsyncIterator[ProcessingBackend]:
    engine = sqlite_engine(place)
    try:
        yield ProcessingBackend("sqlite", SqlProcessingRuleStore(engine), SqlSchemaStore(engine))
    finally:
        await engine.dispose()


@asynccontextmanager
async def mariadb_processing(place: Path) -> AsyncIterator[ProcessingBackend]:
    async with mariadb_database(place) as database:
        engine = database.engine
        schema = config_schema_store(engine, database.settings)
        yield ProcessingBackend("mariadb", SqlProcessingRuleStore(engine), schema)


PROCESSING_BACKENDS: dict[str, ProcessingOpener] = {
    "sqlite": sqlite_processing,
    "mariadb": mariadb_processing,
}


@pytest.fixture(params=list(PROCESSING_BACKENDS))
def open_processing(request: pytest.FixtureRequest) -> ProcessingOpener:
    return PROCESSING_BACKENDS[request.param]


@pytest.fixture
async def store(
    open_processing: ProcessingOpener, tmp_path: Path
) -> AsyncIterator[ProcessingRuleStore]:
    async with open_processing(tmp_path / "config") as backend:
        await backend.schema.create_schema()
        yield backend.rules


def validation(rule_id: str, event_type: str = "purchase", **changes: object) -> ValidationRule:
    rule = ValidationRule(
        tenant="default",
        id=rule_id,
        name=f"validation {rule_id}",
        event_type=event_type,
        json_schema={"type": "object", "required": ["properties"]},
        created=T0,
    )
    return msgspec.structs.replace(rule, **changes)


def reshaping(rule_id: str, event_type: str = "purchase", **changes: object) -> ReshapeRule:
    rule = ReshapeRule(
        tenant="default",
        id=rule_id,
        name=f"reshaping {rule_id}",
        event_type=event_type,
        created=T0,
        source_id="web",
        properties={"total": "{{ event.properties.amount }}", "nested": {"n": [1, 2.5, None]}},
    )
    return msgspec.structs.replace(rule, **changes)


def mapping(rule_id: str, event_type: str = "purchase", **changes: object) -> MappingRule:
    rule = MappingRule(
        tenant="default",
        id=rule_id,
        name=f"mapping {rule_id}",
        event_type=event_type,
        created=T0,
        condition="event@properties.total > 10",
        mappings=[
            FieldMapping(profile="stats.ltv", op="increment", event=["properties.total"], value=0),
            FieldMapping(profile="consents.{properties.type}", value={"granted": True}),
        ],
    )
    return msgspec.structs.replace(rule, **changes)


async def test_each_kind_round_trips_whole(store: ProcessingRuleStore) -> None:
    for rule in (validation("v1"), reshaping("r1"), mapping("m1")):
        await store.save(rule)
    assert await store.get("default", ValidationRule, "v1") == validation("v1")
    assert await store.get("default", ReshapeRule, "r1") == reshaping("r1")
    assert await store.get("default", MappingRule, "m1") == mapping("m1")


async def test_creation_time_keeps_sub_second_precision(store: ProcessingRuleStore) -> None:
    created = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    await store.save(mapping("m1", created=created))
    found = await store.get("default", MappingRule, "m1")
    assert found is not None and found.created == created


async def test_ids_are_per_kind_and_per_tenant(store: ProcessingRuleStore) -> None:
    await store.save(validation("same"))
    await store.save(mapping("same"))
    await store.save(mapping("same", tenant="other", name="theirs"))
    assert await store.get("default", ReshapeRule, "same") is None
    assert (await store.get("default", ValidationRule, "same")) == validation("same")
    mine = await store.get("default", MappingRule, "same")
    theirs = await store.get("other", MappingRule, "same")
    assert mine is not None and theirs is not None
    assert (mine.name, theirs.name) == ("mapping same", "theirs")


async def test_save_replaces_the_rule_with_the_same_id(store: ProcessingRuleStore) -> None:
    await store.save(mapping("m1"))
    changed = mapping("m1", event_type="order-completed", enabled=False, version=2, condition=None)
    await store.save(changed)
    assert await store.get("default", MappingRule, "m1") == changed
    assert await store.list("default", MappingRule) == [changed]


async def test_list_by_kind_and_event_type_oldest_first(store: ProcessingRuleStore) -> None:
    later = T0 + timedelta(seconds=1)
    await store.save(mapping("b", created=later))
    await store.save(mapping("a", created=later))  # same time: by id
    await store.save(mapping("first"))
    await store.save(mapping("other-type", event_type="page-view"))
    await store.save(mapping("disabled", enabled=False))
    await store.save(validation("v"))
    listed = await store.list("default", MappingRule, event_type="purchase")
    assert [rule.id for rule in listed] == ["disabled", "first", "a", "b"]
    assert len(await store.list("default", MappingRule)) == 5
    assert await store.list("other", MappingRule) == []
    assert [rule.id for rule in await store.list("default", ValidationRule)] == ["v"]


async def test_for_event_type_gives_enabled_rules_of_every_kind(
    store: ProcessingRuleStore,
) -> None:
    rules: list[ProcessingRule] = [
        validation("v", created=T0 + timedelta(seconds=3)),
        reshaping("r", created=T0 + timedelta(seconds=2)),
        mapping("m", created=T0 + timedelta(seconds=1)),
        mapping("off", enabled=False),
        mapping("elsewhere", event_type="page-view"),
        mapping("theirs", tenant="other"),
    ]
    for rule in rules:
        await store.save(rule)
    found = await store.for_event_type("default", "purchase")
    assert [(type(rule).__name__, rule.id) for rule in found] == [
        ("MappingRule", "m"),
        ("ReshapeRule", "r"),
        ("ValidationRule", "v"),
    ]
    assert await store.for_event_type("default", "nothing") == []


async def test_delete(store: ProcessingRuleStore) -> None:
    await store.save(mapping("m1"))
    await store.save(validation("m1"))
    assert await store.delete("default", MappingRule, "m1") is True
    assert await store.delete("default", MappingRule, "m1") is False
    assert await store.get("default", MappingRule, "m1") is None
    assert await store.get("default", ValidationRule, "m1") is not None  # other kind untouched
    assert await store.delete("other", ValidationRule, "m1") is False


async def test_rules_survive_reopening(open_processing: ProcessingOpener, tmp_path: Path) -> None:
    place = tmp_path / "config"
    async with open_processing(place) as backend:
        await backend.schema.create_schema()
        await backend.rules.save(reshaping("r1"))
    async with open_processing(place) as backend:
        await backend.schema.create_schema()  # again, as every start does: keeps the data
        assert await backend.rules.get("default", ReshapeRule, "r1") == reshaping("r1")
