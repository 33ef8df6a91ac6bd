"""Merging two profile documents without losing anything.

Strategies, per part of the profile:

- `traits`, `data`, `consents`: objects are merged key by key and lists united (order kept, no
  duplicates). Of two different scalars, the one from the more recently updated profile wins;
  the other is kept in the merge log.
- `interests` and `stats` counters are summed, except `stats.visits`: the caller recounts it
  from the sessions both profiles own, so a visit is never counted twice.
- `segments` and `ids` are united.
- First-seen times (`metadata.time.insert`) take the earliest, last-seen ones the latest.
- The marks of applied requests (`metadata.applied`) are united.

The merge log entry on the survivor records, for each path, where the kept value came from and
the value that lost, which is what ``unmerge`` uses to put things back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from tessera.model.applied import PROFILE_MARKS, united

MERGED_PARTS = ("traits", "data", "consents")
SUMMED_PARTS = ("interests", "stats")
# Recomputed by the caller from stored sessions: summing would count a shared session twice.
RECOUNTED_STATS = ("visits",)


@dataclass
class MergeLog:
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    # Paths whose value came from the merged profile (the survivor had none, or lost).
    taken: list[str] = field(default_factory=list)


def merge_documents(
    survivor: dict[str, Any], merged: Mapping[str, Any]
) -> tuple[dict[str, Any], MergeLog]:
    """The survivor's document with the merged one folded in; neither input is changed."""
    result: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(survivor))
    log = MergeLog()
    merged_is_newer = _updated(merged) > _updated(survivor)
    for part in MERGED_PARTS:
        result[part] = _merge_objects(
            result.get(part) or {}, merged.get(part) or {}, part, merged_is_newer, log
        )
    for part in SUMMED_PARTS:
        result[part] = _sum_counters(result.get(part) or {}, merged.get(part) or {})
    result["segments"] = _union(result.get("segments") or [], merged.get("segments") or [])
    result["ids"] = _union(result.get("ids") or [], merged.get("ids") or [])
    _merge_times(result, merged)
    _merge_identity(result, merged)
    # Requests either profile took in are in the survivor: a retry of one applies nothing twice.
    result["metadata"]["applied"] = united(
        result["metadata"].get("applied") or [],
        merged.get("metadata", {}).get("applied") or [],
        PROFILE_MARKS,
    )
    return result, log


def _updated(document: Mapping[str, Any]) -> datetime:
    text = document.get("metadata", {}).get("time", {}).get("update")
    return datetime.fromisoformat(text) if text else datetime.min.replace(tzinfo=UTC)


def _merge_objects(
    mine: Mapping[str, Any],
    theirs: Mapping[str, Any],
    path: str,
    theirs_wins: bool,
    log: MergeLog,
) -> dict[str, Any]:
    result = dict(mine)
    for key, their_value in theirs.items():
        where = f"{path}.{key}"
        if key not in result or result[key] is None:
            if their_value is not None:
                result[key] = their_value
                log.taken.append(where)
            continue
        my_value = result[key]
        if isinstance(my_value, Mapping) and isinstance(their_value, Mapping):
            result[key] = _merge_objects(my_value, their_value, where, theirs_wins, log)
        elif isinstance(my_value, list) and isinstance(their_value, list):
            result[key] = _union(my_value, their_value)
        elif my_value != their_value and their_value is not None:
            kept, dropped = (their_value, my_value) if theirs_wins else (my_value, their_value)
            result[key] = kept
            log.conflicts.append({"path": where, "kept": kept, "dropped": dropped})
            if theirs_wins:
                log.taken.append(where)
    return result


def _union(mine: list[Any], theirs: list[Any]) -> list[Any]:
    seen = {msgspec.json.encode(item) for item in mine}
    result = list(mine)
    for item in theirs:
        encoded = msgspec.json.encode(item)
        if encoded not in seen:
            seen.add(encoded)
            result.append(item)
    return result


def _sum_counters(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(mine)
    for key, value in theirs.items():
        if key in RECOUNTED_STATS:
            continue
        current = result.get(key)
        if _number(current) and _number(value):
            result[key] = current + value
        elif current is None:
            result[key] = value
    return result


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _merge_times(result: dict[str, Any], merged: Mapping[str, Any]) -> None:
    mine = result.setdefault("metadata", {}).setdefault("time", {})
    theirs = merged.get("metadata", {}).get("time", {})
    for name, pick in (("insert", min), ("update", max), ("last_visit", max)):
        values = [value for value in (mine.get(name), theirs.get(name)) if value]
        if values:
            mine[name] = pick(values, key=datetime.fromisoformat)


def _merge_identity(result: dict[str, Any], merged: Mapping[str, Any]) -> None:
    mine = result["metadata"].setdefault("identity", {})
    for path, digests in merged.get("metadata", {}).get("identity", {}).items():
        mine[path] = _union(mine.get(path, []), digests)
