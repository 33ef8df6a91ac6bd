"""Merging two profile documents without losing anything.

Strategies, per part of the profile:

- `traits`, `data`, `consents`: objects are merged key by key and lists united (order kept, no
  duplicates). Of two different scalars, the one from the more recently updated profile wins;
  the other is kept in the merge log.
- `interests` and `stats` counters are summed, except `stats.visits`: the caller recounts it
  from the sessions both profiles own, so a visit is never counted twice. A sum that would not
  be finite or would pass the limit of numbers (model/bounds.py) keeps the survivor's value;
  the merge log records the merged profile's as a conflict.
- `segments` and `ids` are united.
- First-seen times (`metadata.time.insert`) take the earliest, last-seen ones the latest.
- The marks of applied requests (`metadata.applied`) are united.

The merge log entry on the survivor records, for each path, where the kept value came from and
the value that lost, which is what ``unmerge`` uses to put things back.

A merge whose result would pass a bound of a profile (ids, trait keys, bytes) is not made:
``MergeRefused`` says which, and both profiles stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from tessera.model.applied import PROFILE_MARKS, united
from tessera.model.bounds import (
    DEFAULT_LIMITS,
    ProfileLimits,
    bounded_sum,
    encoded_size,
    is_number,
    size_problem,
    trimmed_merges,
)

MERGED_PARTS = ("traits", "data", "consents")
SUMMED_PARTS = ("interests", "stats")
# Recomputed by the caller from stored sessions: summing would count a shared session twice.
RECOUNTED_STATS = ("visits",)


class MergeRefused(Exception):
    """The merged profile would pass a bound; ``message`` says which."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class MergeLog:
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    # Paths whose value came from the merged profile (the survivor had none, or lost).
    taken: list[str] = field(default_factory=list)


def merge_documents(
    survivor: dict[str, Any], merged: Mapping[str, Any], limits: ProfileLimits = DEFAULT_LIMITS
) -> tuple[dict[str, Any], MergeLog]:
    """The survivor's document with the merged one folded in; neither input is changed.
    MergeRefused when the result would pass a bound of ``limits``. The survivor's merge log
    is trimmed to leave room for the entry the caller adds."""
    result: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(survivor))
    log = MergeLog()
    merged_is_newer = _updated(merged) > _updated(survivor)
    for part in MERGED_PARTS:
        result[part] = _merge_objects(
            result.get(part) or {}, merged.get(part) or {}, part, merged_is_newer, log
        )
    for part in SUMMED_PARTS:
        result[part] = _sum_counters(
            result.get(part) or {}, merged.get(part) or {}, part, limits.max_number, log
        )
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
    result["metadata"]["merges"] = trimmed_merges(
        result["metadata"].get("merges") or [], limits.max_merges - 1
    )
    # The log entry the caller adds holds the merged ids, conflicts and taken paths.
    entry = encoded_size([merged.get("ids"), log.conflicts, log.taken]) + 128
    problem = size_problem(result, limits, extra_bytes=entry)
    if problem is not None:
        # No ids in the message: it may reach a public client, who must not learn them.
        raise MergeRefused(f"a merge with another profile was not made: {problem}")
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


def _sum_counters(
    mine: Mapping[str, Any], theirs: Mapping[str, Any], part: str, limit: float, log: MergeLog
) -> dict[str, Any]:
    result = dict(mine)
    for key, value in theirs.items():
        if key in RECOUNTED_STATS:
            continue
        current = result.get(key)
        if is_number(current) and is_number(value):
            total = bounded_sum(current, value, limit)
            if total is None:
                log.conflicts.append({"path": f"{part}.{key}", "kept": current, "dropped": value})
            else:
                result[key] = total
        elif current is None:
            result[key] = value
    return result


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
