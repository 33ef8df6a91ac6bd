"""Merge keys: normalising their values, refusing values that identify nobody, and hashing.

The identity index stores only salted hashes, so a copy of it reveals no e-mail address or
phone number; the salt is ``AUTO_PROFILE_MERGING``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

EMAIL_PATH = "data.contact.email.main"
PHONE_PATH = "data.contact.phone.main"
IDENTIFIER_PATH = "data.identifier.id"
DEFAULT_MERGE_KEYS = (EMAIL_PATH, PHONE_PATH, IDENTIFIER_PATH)

# Values that trackers and forms send when they know nothing: merging on them would join
# every anonymous visitor into one profile.
ALWAYS_BLOCKED = frozenset(
    {
        "",
        "null",
        "none",
        "nil",
        "undefined",
        "anonymous",
        "unknown",
        "n/a",
        "na",
        "0",
        "-1",
        "test",
        "false",
        "true",
        "[object object]",
    }
)
_ALL_ZEROS = re.compile(r"^[0\W_]+$")
_DIGITS = re.compile(r"\D+")
MAX_VALUE_LENGTH = 320
# Fewer digits than this is no phone number of one person: the shortest complete numbers in
# the world's numbering plans (Niue, Tokelau: a 3-digit country code and 4 digits) have 7.
# Shorter values are service codes, extensions or placeholders ("1", "112", "-1", "12345")
# that many people send, and merging on them would join them all into one profile.
MIN_PHONE_DIGITS = 7


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One normalised merge-key value of a profile, with its hash for the index."""

    path: str
    value: str
    digest: str


def normalise(path: str, raw: Any) -> str | None:
    """The comparable form of a value, or None when it cannot identify anyone."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    text = str(raw).strip()
    if path == EMAIL_PATH:
        text = text.lower()
        if text.count("@") != 1 or text.startswith("@") or text.endswith("@"):
            return None
    elif path == PHONE_PATH:
        text = _normalise_phone(text)
        if len(text.lstrip("+")) < MIN_PHONE_DIGITS:
            return None
    else:
        text = text.lower()
    if not text or len(text) > MAX_VALUE_LENGTH:
        return None
    return text


def _normalise_phone(text: str) -> str:
    # "+48 600-100-200" and "0048600100200" are the same number: digits only, with the
    # international "00" prefix read as "+". Numbers without a country prefix stay as they are.
    international = text.startswith("+") or text.startswith("00")
    digits = _DIGITS.sub("", text)
    if text.startswith("00"):
        digits = digits[2:]
    return f"+{digits}" if international and digits else digits


def is_blocked(value: str, extra_blocked: frozenset[str]) -> bool:
    """Whether a value (as sent, or normalised) is one that identifies nobody."""
    lowered = value.strip().lower()
    if lowered in ALWAYS_BLOCKED or lowered in extra_blocked:
        return True
    local_part = lowered.split("@", 1)[0]
    return bool(_ALL_ZEROS.match(local_part.lstrip("+")))


def _refused(path: str, raw: Any, value: str, extra_blocked: frozenset[str]) -> bool:
    """Blocked as sent or once normalised: normalising can turn a blocked value into another
    ("-1" is the phone "1"), and the operator's list may name a value in any of its spellings
    ("555-1234" blocks "5551234" too)."""
    return (
        is_blocked(str(raw), extra_blocked)
        or is_blocked(value, extra_blocked)
        or value in _normalised_blocked(path, extra_blocked)
    )


@functools.lru_cache(maxsize=64)
def _normalised_blocked(path: str, extra_blocked: frozenset[str]) -> frozenset[str]:
    """The blocked values (built-in and the operator's) normalised as values of ``path``."""
    found = (normalise(path, value) for value in ALWAYS_BLOCKED | extra_blocked)
    return frozenset(value for value in found if value is not None)


def digest(salt: str, path: str, value: str) -> str:
    return hmac.new(salt.encode(), f"{path}\x00{value}".encode(), hashlib.sha256).hexdigest()


def read_path(document: Mapping[str, Any], path: str) -> Any:
    node: Any = document
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def key_values(
    document: Mapping[str, Any],
    paths: Iterable[str],
    *,
    salt: str,
    extra_blocked: frozenset[str],
) -> tuple[list[KeyValue], list[str]]:
    """The merge-key values a profile document holds, and warnings for refused ones."""
    found: list[KeyValue] = []
    warnings: list[str] = []
    for path in paths:
        raw = read_path(document, path)
        if raw is None:
            continue
        for item in raw if isinstance(raw, list) else [raw]:
            value = normalise(path, item)
            if value is None or _refused(path, item, value, extra_blocked):
                warnings.append(f"{path}: value is not used to merge profiles (blocked or invalid)")
                continue
            found.append(KeyValue(path, value, digest(salt, path, value)))
    return found, warnings
