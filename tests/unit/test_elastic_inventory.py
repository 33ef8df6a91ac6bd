"""Index names read back: partition suffixes into time ranges, and only our own names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tessera.storage.elastic.inventory import partition_range, recognise, tenant_from_part
from tessera.storage.elastic.naming import (
    PARTITIONINGS,
    Names,
    Partitioning,
    partition,
    tenant_part,
)
from tessera.storage.elastic.retention import expired_partitions, lifecycle_policy


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("suffix", "every", "start", "end"),
    [
        ("2024", "year", utc(2024, 1, 1), utc(2025, 1, 1)),
        ("2024-q1", "quarter", utc(2024, 1, 1), utc(2024, 4, 1)),
        ("2024-q4", "quarter", utc(2024, 10, 1), utc(2025, 1, 1)),
        ("2024-02", "month", utc(2024, 2, 1), utc(2024, 3, 1)),
        ("2024-12", "month", utc(2024, 12, 1), utc(2025, 1, 1)),
        ("2024-w09", "week", utc(2024, 2, 26), utc(2024, 3, 4)),
        # ISO week 1 of 2025 starts on Monday 30 December 2024.
        ("2025-w01", "week", utc(2024, 12, 30), utc(2025, 1, 6)),
        ("2020-w53", "week", utc(2020, 12, 28), utc(2021, 1, 4)),
        ("2024-02-29", "day", utc(2024, 2, 29), utc(2024, 3, 1)),
        ("2024-12-31", "day", utc(2024, 12, 31), utc(2025, 1, 1)),
    ],
)
def test_partition_range(suffix: str, every: str, start: datetime, end: datetime) -> None:
    found = partition_range(suffix)
    assert (found.every, found.start, found.end) == (every, start, end)


@pytest.mark.parametrize(
    "moment",
    [utc(2024, 1, 1), utc(2024, 12, 30, 12), utc(2021, 1, 3, 23, 59), utc(2023, 7, 15, 8)],
)
@pytest.mark.parametrize("every", PARTITIONINGS)
def test_range_of_a_partition_holds_the_moment_it_was_made_from(
    moment: datetime, every: Partitioning
) -> None:
    found = partition_range(partition(moment, every))
    assert found.start <= moment < found.end
    assert found.every == every


@pytest.mark.parametrize(
    "suffix", ["2024-13", "2024-q5", "2021-w53", "2024-w00", "2023-02-29", "24", "2024-1", "x"]
)
def test_not_a_partition(suffix: str) -> None:
    with pytest.raises(ValueError):
        partition_range(suffix)


def test_tenant_spelling_round_trips() -> None:
    for tenant in ("acme", "a_b-c", "Ünï", "ACME", "a.b"):
        assert tenant_from_part(tenant_part(tenant)) == tenant


def test_only_names_of_this_prefix_are_recognised() -> None:
    names = Names("tess")
    event = recognise(names, "tess.acme.event.v1-2024-03")
    assert event is not None
    assert (event.tenant, event.kind, event.partition, event.version) == (
        "acme",
        "event",
        "2024-03",
        1,
    )
    encoded = recognise(names, names.partition_index("Ünï", "session", "2024-q2"))
    assert encoded is not None and encoded.tenant == "Ünï"
    single = recognise(names, names.single_index("acme", "identity"))
    assert single is not None and single.partition is None and single.range is None
    for foreign in (
        "tess2.acme.event.v1-2024-03",  # another prefix
        "other.tess.acme.event.v1-2024-03",
        "tess.acme.event.v1-2024-13",  # not a date
        "tess.acme.event.v1",  # a partitioned kind without a partition
        "tess.acme.identity.v1-2024",  # a single kind with one
        "tess.acme.thing.v1-2024",  # not a kind
        "tess.acme.event.v1-2024-03-restored",
        "tess.t+zz.event.v1-2024",  # not hex
        "tess.acme.event",  # the alias's name
    ):
        assert recognise(names, foreign) is None, foreign


def test_expiry_needs_the_whole_range_older_than_the_age() -> None:
    names = Names("tess")
    found = [
        recognise(names, f"tess.acme.event.v1-{suffix}")
        for suffix in ("2024-02", "2024-03", "2024-04")
    ] + [recognise(names, "tess.acme.profile.v1-2020")]
    indices = [index for index in found if index is not None]
    now = utc(2024, 5, 1)
    ages = {"event": timedelta(days=30)}
    expired = expired_partitions(indices, now, ages)
    # March ended on 1 April, exactly 30 days ago: not MORE than the age, so it stays.
    assert [expiry.partition for expiry in expired] == ["2024-02"]
    assert expired[0].ends_at == utc(2024, 3, 1)
    later = expired_partitions(
        [i for i in indices if i is not None], now + timedelta(seconds=1), ages
    )
    assert [expiry.partition for expiry in later] == ["2024-02", "2024-03"]


def test_lifecycle_policy_deletes_after_the_age() -> None:
    policy = lifecycle_policy(timedelta(days=45))
    assert policy["phases"] == {"delete": {"min_age": "45d", "actions": {"delete": {}}}}
    assert lifecycle_policy(timedelta(hours=36))["phases"]["delete"]["min_age"] == "129600s"
