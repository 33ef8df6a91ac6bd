"""Reading index names back: which tenant, kind and time range an existing index holds.

naming.py builds names (`<prefix>.<tenant>.<kind>.v<version>-<partition>`); retention and
restore need the opposite. A name is only recognised when every part fits exactly, so an index
another installation (another prefix, or a hand-made `tessera.backup-old`) owns is never
mistaken for one of ours — what is not recognised is left alone.

A partition suffix says its own granularity (2024, 2024-q1, 2024-03, 2024-w09, 2024-03-07), so
an index cut under an earlier EVENT_PARTITIONING keeps its meaning after the setting changed.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Final

import msgspec
from elasticsearch import AsyncElasticsearch

from tessera.storage.elastic.naming import KINDS, PARTITIONED_KINDS, Names, Partitioning


class TimeRange(msgspec.Struct, frozen=True):
    """[start, end) in UTC."""

    every: Partitioning
    start: datetime
    end: datetime


class KnownIndex(msgspec.Struct, frozen=True):
    name: str
    tenant: str
    kind: str
    version: int
    # None for the kinds that are not cut in time (identity, retired).
    partition: str | None = None
    range: TimeRange | None = None


_YEAR: Final = re.compile(r"^(\d{4})$")
_QUARTER: Final = re.compile(r"^(\d{4})-q([1-4])$")
_MONTH: Final = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK: Final = re.compile(r"^(\d{4})-w(\d{2})$")
_DAY: Final = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
# <tenant part>.<kind>.v<version>[-<partition>], after "<prefix>.".
_REST: Final = re.compile(
    r"^(?P<tenant>[a-z0-9][a-z0-9_-]{0,59}|t\+(?:[0-9a-f]{2})+)"
    r"\.(?P<kind>[a-z]+)\.v(?P<version>[1-9][0-9]*)(?:-(?P<partition>[0-9a-z-]+))?$"
)


def _utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def partition_range(suffix: str) -> TimeRange:
    """The [start, end) a partition suffix stands for; ValueError if it is not one."""
    if found := _YEAR.match(suffix):
        year = int(found[1])
        return TimeRange("year", _utc(date(year, 1, 1)), _utc(date(year + 1, 1, 1)))
    if found := _QUARTER.match(suffix):
        year, quarter = int(found[1]), int(found[2])
        start = date(year, 3 * quarter - 2, 1)
        end = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
        return TimeRange("quarter", _utc(start), _utc(end))
    if found := _MONTH.match(suffix):
        year, month = int(found[1]), int(found[2])
        start = date(year, month, 1)  # ValueError for month 13
        end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
        return TimeRange("month", _utc(start), _utc(end))
    if found := _WEEK.match(suffix):
        # ISO weeks: fromisocalendar refuses week 53 of a year that has only 52.
        monday = date.fromisocalendar(int(found[1]), int(found[2]), 1)
        return TimeRange("week", _utc(monday), _utc(monday + timedelta(days=7)))
    if found := _DAY.match(suffix):
        day = date(int(found[1]), int(found[2]), int(found[3]))
        return TimeRange("day", _utc(day), _utc(day + timedelta(days=1)))
    raise ValueError(f"{suffix!r} is not a partition suffix")


def tenant_from_part(part: str) -> str:
    """The tenant id naming.tenant_part spelled as `part`."""
    if part.startswith("t+"):
        return bytes.fromhex(part[2:]).decode()
    return part


def recognise(names: Names, index: str) -> KnownIndex | None:
    """What `index` is, when it is one of this prefix's indices; None for anything else."""
    head = names.prefix + "."
    if not index.startswith(head):
        return None
    found = _REST.match(index[len(head) :])
    if found is None or found["kind"] not in KINDS:
        return None
    kind, suffix = found["kind"], found["partition"]
    # A partitioned kind always has a suffix; the others never do.
    if (kind in PARTITIONED_KINDS) != (suffix is not None):
        return None
    try:
        tenant = tenant_from_part(found["tenant"])
        time_range = partition_range(suffix) if suffix is not None else None
    except ValueError:  # bad hex/UTF-8 or an impossible date: not a name we made
        return None
    return KnownIndex(
        name=index,
        tenant=tenant,
        kind=kind,
        version=int(found["version"]),
        partition=suffix,
        range=time_range,
    )


async def list_index_names(client: AsyncElasticsearch, names: Names) -> list[str]:
    """Every index (open or closed, hidden or not) whose name starts with `<prefix>.`."""
    answer = await client.indices.resolve_index(name=names.everything(), expand_wildcards="all")
    return sorted(item["name"] for item in answer.get("indices") or [])


async def known_indices(client: AsyncElasticsearch, names: Names) -> list[KnownIndex]:
    found = (recognise(names, name) for name in await list_index_names(client, names))
    return [index for index in found if index is not None]
