"""Names of the indices, aliases and templates of one installation, and time partitions.

    <prefix>.<tenant>.<kind>.v<generation>-<partition>  an event/session/profile partition
    <prefix>.<tenant>.<kind>                            the alias every read of that kind uses
    <prefix>.<tenant>.<kind>.v1                         a small index that is not partitioned
    <prefix>.generations                                which generation each kind writes

The tenant is part of every name, so one tenant's data never shares an index with another's
and a tenant can be dropped, snapshotted or restored on its own. The generation (`v1`, `v2`
…) of a partitioned kind changes when its partitions are copied into new indices behind the
alias (reshard.py: another shard count); every partitioned kind starts at generation 1, so
the names of an installation that never resharded are the names it always had.

Index names must be lower case and may not hold `\\ / * ? " < > | , #`, spaces or `:`.
Tenant ids that are already plain (lower-case letters, digits, `_`, `-`) are used as they
are; any other id is spelled `t+<hex of its UTF-8>`: `+` never occurs in a plain id, so two
tenants never get the same name, and no tenant name holds a dot (the separator).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final, Literal

Partitioning = Literal["year", "quarter", "month", "week", "day"]
PARTITIONINGS: Final[tuple[Partitioning, ...]] = ("year", "quarter", "month", "week", "day")

# Kinds cut into time partitions, and the small ones that are not.
PARTITIONED_KINDS: Final = ("event", "session", "profile")
SINGLE_KINDS: Final = ("identity", "retired")
KINDS: Final = PARTITIONED_KINDS + SINGLE_KINDS

VERSION: Final = 1
FIRST_GENERATION: Final = VERSION

_GENERATION_OF = re.compile(r"\.v([1-9][0-9]*)-[0-9a-z-]+$")

_PLAIN_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,59}$")
PREFIX_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def tenant_part(tenant: str) -> str:
    if _PLAIN_TENANT.match(tenant):
        return tenant
    return "t+" + tenant.encode().hex()


def generation_of(index: str) -> int:
    """The generation in a partition's name (`….event.v2-2024-03` → 2); 0 if it has none."""
    found = _GENERATION_OF.search(index)
    return int(found[1]) if found else 0


def partition(moment: datetime, every: Partitioning) -> str:
    """The partition suffix of a moment, in UTC: 2024, 2024-q1, 2024-03, 2024-w09, 2024-03-07.

    Weeks are ISO weeks and carry the ISO year: 2024-12-30 is in week 1 of 2025 (2025-w01).
    """
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if every == "year":
        return f"{utc.year:04d}"
    if every == "quarter":
        return f"{utc.year:04d}-q{(utc.month - 1) // 3 + 1}"
    if every == "month":
        return f"{utc.year:04d}-{utc.month:02d}"
    if every == "week":
        year, week, _ = utc.isocalendar()
        return f"{year:04d}-w{week:02d}"
    if every == "day":
        return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
    raise ValueError(f"unknown partitioning {every!r}")


class Names:
    """Every name one installation (one prefix) uses."""

    def __init__(self, prefix: str) -> None:
        if not PREFIX_PATTERN.match(prefix):
            raise ValueError(
                f"index prefix {prefix!r}: use 1-40 lower-case letters, digits, '-' or '_'"
            )
        self.prefix = prefix

    def alias(self, tenant: str, kind: str) -> str:
        return f"{self.prefix}.{tenant_part(tenant)}.{kind}"

    def partition_index(
        self, tenant: str, kind: str, suffix: str, generation: int = FIRST_GENERATION
    ) -> str:
        return f"{self.alias(tenant, kind)}.v{generation}-{suffix}"

    def single_index(self, tenant: str, kind: str) -> str:
        return f"{self.alias(tenant, kind)}.v{VERSION}"

    def index_pattern(self, tenant: str, kind: str, generation: int = FIRST_GENERATION) -> str:
        """What the tenant's index template of this kind (and generation) applies to."""
        if kind in PARTITIONED_KINDS:
            return f"{self.alias(tenant, kind)}.v{generation}-*"
        return self.single_index(tenant, kind)

    def index_template(self, tenant: str, kind: str, generation: int = FIRST_GENERATION) -> str:
        # Generation 1 keeps the name templates always had.
        base = self.alias(tenant, kind)
        return base if generation == FIRST_GENERATION else f"{base}.v{generation}"

    def component_template(self, kind: str, generation: int = FIRST_GENERATION) -> str:
        """Settings and mappings of a kind, shared by every tenant's index template."""
        return f"{self.prefix}.{kind}.v{generation}"

    def fence_template(self, kind: str) -> str:
        """The template that makes a partition of a left generation unwritable (reshard.py)."""
        return f"{self.prefix}.{kind}.left-generations"

    def fence_patterns(self, kind: str, below: int) -> list[str]:
        """Every tenant's partitions of this kind in generations 1 … below-1."""
        return [f"{self.prefix}.*.{kind}.v{gen}-*" for gen in range(FIRST_GENERATION, below)]

    def generations_index(self) -> str:
        """One small document per partitioned kind: the generation it writes (generations.py)."""
        return f"{self.prefix}.generations"

    def tenant_indices(self, tenant: str) -> str:
        return f"{self.prefix}.{tenant_part(tenant)}.*"

    def everything(self) -> str:
        """Matches every index and template of this prefix (and of no other prefix)."""
        return f"{self.prefix}.*"
