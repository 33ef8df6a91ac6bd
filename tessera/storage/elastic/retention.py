"""Retention: deleting the time partitions whose data is older than a kind's retention age.

A partition goes only when its WHOLE time range ended more than the age ago: with 30 days of
event retention, `2024-03` (March) is deleted after 30 April, not on 31 March when its first
day turned 30 days old — deleting a whole index is the cheap way to drop data in
Elasticsearch, and keeping a little more is the safe side of that trade. Only indices whose
names inventory.recognise reads as a partition of this prefix are ever touched; the small
kinds that are not cut in time (identity, retired) are never deleted here.

Where the cluster has index lifecycle management (ILM), each partition also gets a lifecycle
policy whose `delete` phase starts `age` after its `origination_date`, which is set to the end
of the partition's range: the cluster then deletes on the same rule by itself, also between two
runs. ILM cannot derive that date from our index names, so each run attaches the partitions
created since the last one. A distribution without ILM (like the minimal one the tests use) is
reported and skipped: the deletion done by `apply_retention` is Tessera's own and needs nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec
from elasticsearch import ApiError, AsyncElasticsearch

from tessera.storage.elastic.inventory import KnownIndex, known_indices
from tessera.storage.elastic.naming import PARTITIONED_KINDS, Names

log = logging.getLogger(__name__)

# Index names per delete request: names, never a wildcard (action.destructive_requires_name).
DELETE_BATCH = 50


class Expiry(msgspec.Struct, frozen=True):
    index: str
    kind: str
    tenant: str
    partition: str
    ends_at: datetime


class RetentionReport(msgspec.Struct, frozen=True):
    expired: list[Expiry]
    deleted: list[str]
    dry_run: bool


IlmState = Literal["running", "stopping", "stopped", "unavailable"]


class LifecycleReport(msgspec.Struct, frozen=True):
    state: IlmState
    message: str
    policies: list[str] = msgspec.field(default_factory=list)
    attached: list[str] = msgspec.field(default_factory=list)


def expired_partitions(
    indices: Iterable[KnownIndex], now: datetime, ages: Mapping[str, timedelta]
) -> list[Expiry]:
    """The partitions whose range ended more than their kind's age before `now`."""
    found = []
    for index in indices:
        age = ages.get(index.kind)
        if age is None or index.range is None or index.partition is None:
            continue
        if now - index.range.end > age:
            found.append(
                Expiry(
                    index=index.name,
                    kind=index.kind,
                    tenant=index.tenant,
                    partition=index.partition,
                    ends_at=index.range.end,
                )
            )
    return sorted(found, key=lambda expiry: (expiry.ends_at, expiry.index))


async def plan_retention(
    client: AsyncElasticsearch, names: Names, now: datetime, ages: Mapping[str, timedelta]
) -> list[Expiry]:
    _check_ages(ages)
    return expired_partitions(await known_indices(client, names), now, ages)


async def apply_retention(
    client: AsyncElasticsearch,
    names: Names,
    now: datetime,
    ages: Mapping[str, timedelta],
    *,
    dry_run: bool = False,
) -> RetentionReport:
    """Delete the expired partitions (with dry_run: only say which they are)."""
    expired = await plan_retention(client, names, now, ages)
    if dry_run or not expired:
        return RetentionReport(expired=expired, deleted=[], dry_run=dry_run)
    targets = [expiry.index for expiry in expired]
    for start in range(0, len(targets), DELETE_BATCH):
        batch = targets[start : start + DELETE_BATCH]
        # ignore_unavailable: a partition ILM (or a second run) deleted meanwhile is gone anyway.
        await client.indices.delete(index=",".join(batch), ignore_unavailable=True)
        log.info("retention deleted %d partitions: %s", len(batch), ", ".join(batch))
    return RetentionReport(expired=expired, deleted=targets, dry_run=False)


def _check_ages(ages: Mapping[str, timedelta]) -> None:
    for kind, age in ages.items():
        if kind not in PARTITIONED_KINDS:
            raise ValueError(f"retention applies to {', '.join(PARTITIONED_KINDS)}, not {kind!r}")
        if age <= timedelta(0):
            raise ValueError(f"retention of {kind}: the age must be positive, got {age}")


# --- ILM -----------------------------------------------------------------------------------


def policy_name(names: Names, kind: str) -> str:
    return f"{names.prefix}.{kind}-retention"


def lifecycle_policy(age: timedelta) -> dict[str, Any]:
    """Delete `age` after the origination date (the end of the partition's range)."""
    seconds = int(age.total_seconds())
    min_age = f"{seconds // 86400}d" if seconds % 86400 == 0 else f"{seconds}s"
    return {
        "phases": {"delete": {"min_age": min_age, "actions": {"delete": {}}}},
        "_meta": {"managed_by": "tessera", "rule": "delete when the whole range is older"},
    }


async def ilm_state(client: AsyncElasticsearch) -> tuple[IlmState, str]:
    """Whether this cluster runs ILM, and in words why not when it does not."""
    try:
        answer = await client.ilm.get_status()
    except ApiError as error:
        # A distribution without the ILM module has no such route: 400/404/405 (this one's
        # `/_ilm/status` answers 405); a user without the privilege gets 401/403.
        if error.meta.status in (400, 401, 403, 404, 405, 410):
            return "unavailable", f"GET _ilm/status answered {error.meta.status}"
        raise
    mode = str(answer.get("operation_mode", "")).lower()
    if mode == "running":
        return "running", "ILM is running"
    if mode in ("stopping", "stopped"):
        return mode, f"ILM is {mode} on this cluster"  # type: ignore[return-value]
    return "unavailable", f"unexpected ILM operation mode {mode!r}"


async def install_lifecycle(
    client: AsyncElasticsearch, names: Names, now: datetime, ages: Mapping[str, timedelta]
) -> LifecycleReport:
    """Put one policy per kind with an age and attach it to that kind's live partitions.

    A kind without an age (kept forever) has its policy detached and removed, so a policy
    installed under an earlier setting can never delete what is now meant to stay.
    """
    _check_ages(ages)
    state, why = await ilm_state(client)
    if state == "unavailable":
        return LifecycleReport(
            state=state, message=f"ILM not available ({why}), Tessera's own retention applies"
        )
    policies: list[str] = []
    for kind in PARTITIONED_KINDS:
        name = policy_name(names, kind)
        age = ages.get(kind)
        if age is None:
            await _drop_policy(client, names, kind, name)
            continue
        await client.ilm.put_lifecycle(name=name, policy=lifecycle_policy(age))
        policies.append(name)
    attached = await _attach(client, names, now, ages)
    message = f"ILM policies {', '.join(policies) or '(none)'}; {len(attached)} partitions attached"
    if state != "running":
        message += f"; note: {why}, so nothing is deleted by ILM until it runs"
    return LifecycleReport(state=state, message=message, policies=policies, attached=attached)


async def _attach(
    client: AsyncElasticsearch, names: Names, now: datetime, ages: Mapping[str, timedelta]
) -> list[str]:
    groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    for index in await known_indices(client, names):
        age = ages.get(index.kind)
        if age is None or index.range is None:
            continue
        if now - index.range.end > age:
            continue  # expired: apply_retention deletes it now
        ends_ms = int(index.range.end.timestamp() * 1000)
        groups[(policy_name(names, index.kind), ends_ms)].append(index.name)
    attached: list[str] = []
    for (policy, ends_ms), members in sorted(groups.items()):
        for start in range(0, len(members), DELETE_BATCH):
            batch = members[start : start + DELETE_BATCH]
            await client.indices.put_settings(
                index=",".join(batch),
                settings={
                    "index.lifecycle.name": policy,
                    "index.lifecycle.origination_date": ends_ms,
                },
            )
            attached.extend(batch)
    return attached


async def _drop_policy(client: AsyncElasticsearch, names: Names, kind: str, policy: str) -> None:
    try:
        await client.ilm.get_lifecycle(name=policy)
    except ApiError as error:
        if error.meta.status == 404:
            return
        raise
    pattern = f"{names.everything()}.{kind}.v*-*"
    await client.ilm.remove_policy(index=pattern)
    await client.ilm.delete_lifecycle(name=policy)
