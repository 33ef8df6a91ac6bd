"""How large a profile and the numbers in it may grow (docs/security.md, "Bounds").

Anyone who knows an event source id can send events, so what one client can make a profile
hold is bounded here, and every place that changes a profile (mapping rules, workflow actions,
merges, the visit counters) asks these functions before it writes:

- Numbers: a sum or any computed number must be finite and at most ``max_number`` in
  magnitude (default 2**53 - 1, the largest integer a double, JavaScript and Elasticsearch's
  ``double`` hold exactly). JSON has no spelling for infinity or NaN: msgspec writes them as
  ``null``, which a profile's ``stats`` (numbers only) then cannot be read back as.
- Size: the profile's encoded bytes, the keys under ``traits``, and its ``ids``. What would
  take a profile past one of them is refused (the value stays as it was, and the answer
  warns); what is already there is never cut.
- Merge history: ``metadata.merges`` keeps its newest ``max_merges`` entries; older ones are
  folded into one summary entry (count and time range), so the log cannot grow without end.

Pure functions, no I/O: the ingest path, workflows and merges share them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import msgspec

# 2**53 - 1: every integer up to it is exact as a double (JSON readers, JavaScript, Lucene).
SAFE_INTEGER: Final = 2**53 - 1

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class ProfileLimits:
    """One installation's bounds (``TESSERA_MAX_NUMBER``, ``TESSERA_MAX_PROFILE_*``)."""

    max_number: float = SAFE_INTEGER
    max_bytes: int = 512 * 1024
    max_traits: int = 1000
    max_ids: int = 1000
    max_merges: int = 100


DEFAULT_LIMITS: Final = ProfileLimits()


# --- Numbers ---------------------------------------------------------------------------------


def is_number(value: Any) -> TypeGuard[int | float]:
    """A JSON number (booleans are not numbers)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def within(value: int | float, limit: float) -> bool:
    """Finite and at most ``limit`` in magnitude; exact for integers of any size."""
    if isinstance(value, int):
        # Compared as integers: float(2**2000) would raise OverflowError.
        return abs(value) <= limit
    return math.isfinite(value) and abs(value) <= limit


def bounded_sum(current: int | float, amount: int | float, limit: float) -> int | float | None:
    """``current + amount``, or None when the sum would not be finite or passes ``limit``."""
    try:
        total = current + amount
    except OverflowError:  # a huge integer meeting a float
        return None
    return total if within(total, limit) else None


def numbers_within(value: Any, limit: float) -> bool:
    """Every number anywhere in a JSON value is finite and within ``limit``."""
    if is_number(value):
        return within(value, limit)
    if isinstance(value, Mapping):
        return all(numbers_within(item, limit) for item in value.values())
    if isinstance(value, list | tuple):
        return all(numbers_within(item, limit) for item in value)
    return True


def all_finite(value: Any) -> bool:
    """No float anywhere in a JSON value is infinite or NaN (JSON would turn it into null)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(all_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(all_finite(item) for item in value)
    return True


def out_of_bounds(limit: float) -> str:
    """How a refused number is described in warnings."""
    shown = f"{limit:,.0f}" if limit < 1e21 else f"{limit:g}"
    return f"not finite or beyond ±{shown} (TESSERA_MAX_NUMBER)"


# --- Size ------------------------------------------------------------------------------------


def encoded_size(value: Any) -> int:
    """Bytes of a JSON value as stored."""
    return len(_encode(value))


def count_keys(value: Any) -> int:
    """Keys of an object at every depth (what ``max_traits`` counts under ``traits``)."""
    if not isinstance(value, Mapping):
        return 0
    return sum(1 + count_keys(item) for item in value.values())


class ProfileBudget:
    """What a run of changes may still add to one profile document (bytes, trait keys).

    Measured once, then kept up to date from the size of each value written, so a request
    does not encode the whole profile after every change. The estimate errs on the large side
    (keys are counted with the JSON around them), so no run of changes takes a profile past
    a bound however it is cut into steps.
    """

    # Quotes, colon and comma around a key in JSON.
    _KEY_OVERHEAD = 4

    def __init__(self, document: Mapping[str, Any], limits: ProfileLimits) -> None:
        self.limits = limits
        self.size = encoded_size(document)
        traits = document.get("traits")
        self.traits = count_keys(traits) if isinstance(traits, Mapping) else 0

    def allows(self, document: Mapping[str, Any], keys: list[str], new: Any) -> str | None:
        """None when the value at ``keys`` (a path in ``document``, objects on the way made
        when missing) may become ``new``, and the change is counted; else why it may not."""
        node: Any = document
        missing = 0
        for key in keys[:-1]:
            if missing or not isinstance(node, Mapping) or key not in node:
                missing += 1
                continue
            node = node[key]
        present = not missing and isinstance(node, Mapping) and keys[-1] in node
        old = node[keys[-1]] if present else None
        if present:
            grow = encoded_size(new) - encoded_size(old)
        else:
            made = keys[len(keys) - 1 - missing :]
            grow = encoded_size(new) + sum(len(k.encode()) + self._KEY_OVERHEAD for k in made)
            grow += 2 * missing  # the braces of each object made on the way
        more_traits = 0
        if keys[0] == "traits":
            more_traits = count_keys(new) - count_keys(old)
            if len(keys) > 1 and not present:
                more_traits += 1 + missing
        if grow > 0 and self.size + grow > self.limits.max_bytes:
            return (
                f"the profile would pass {self.limits.max_bytes} bytes (TESSERA_MAX_PROFILE_BYTES)"
            )
        if more_traits > 0 and self.traits + more_traits > self.limits.max_traits:
            return (
                f"the profile would pass {self.limits.max_traits} trait keys "
                "(TESSERA_MAX_PROFILE_TRAITS)"
            )
        self.size += grow
        self.traits += more_traits
        return None


def size_problem(
    document: Mapping[str, Any], limits: ProfileLimits, *, extra_bytes: int = 0
) -> str | None:
    """Why a whole profile document (with ``extra_bytes`` more to come) is past a bound, or
    None. Merges check their result so."""
    ids = document.get("ids") or []
    if len(ids) > limits.max_ids:
        return f"it would hold more than {limits.max_ids} ids (TESSERA_MAX_PROFILE_IDS)"
    traits = document.get("traits")
    if isinstance(traits, Mapping) and count_keys(traits) > limits.max_traits:
        return (
            f"it would hold more than {limits.max_traits} trait keys (TESSERA_MAX_PROFILE_TRAITS)"
        )
    if encoded_size(document) + extra_bytes > limits.max_bytes:
        return f"it would be larger than {limits.max_bytes} bytes (TESSERA_MAX_PROFILE_BYTES)"
    return None


# --- Merge history ---------------------------------------------------------------------------

SUMMARY_KEY: Final = "summary"


def trimmed_merges(entries: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """The merge log with at most ``keep`` entries besides one summary of the older ones.

    The summary says how many merges it stands for and when the first and the last of them
    happened; their details (conflicts, the values that lost) leave the log. The merged-away
    profiles themselves stay in the retired store (export lists them), and unmerging one
    of them still gives back its ids, values and records, but no longer the survivor's
    values it had replaced.
    """
    summaries = [entry for entry in entries if entry.get(SUMMARY_KEY)]
    details = [entry for entry in entries if not entry.get(SUMMARY_KEY)]
    if len(details) <= keep and len(summaries) <= 1:
        return entries
    cut = max(0, len(details) - keep)
    folded, kept = details[:cut], details[cut:]
    count = sum(int(entry.get("count", 0)) for entry in summaries) + len(folded)
    times = [str(e[name]) for e in summaries for name in ("first", "last") if e.get(name)]
    times += [str(entry["time"]) for entry in folded if entry.get("time")]
    summary: dict[str, Any] = {SUMMARY_KEY: True, "count": count}
    if times:
        summary["first"], summary["last"] = min(times), max(times)
    return [summary, *kept]
