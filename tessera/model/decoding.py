"""Decoding stored records: one place that knows a profile may need repairing when read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import msgspec

from tessera.model.profile import Profile, profile_from_builtins, profile_from_json

R = TypeVar("R", bound=msgspec.Struct)


def json_decoder(kind: type[R]) -> Callable[[bytes | str], R]:
    """Stored JSON to a record of ``kind`` (profiles repaired, see model/profile.py)."""
    if kind is Profile:
        return cast(Callable[[bytes | str], R], profile_from_json)
    return msgspec.json.Decoder(kind).decode


def from_builtins(document: dict[str, Any], kind: type[R]) -> R:
    """Plain JSON values to a record of ``kind`` (profiles repaired likewise)."""
    if kind is Profile:
        return cast(R, profile_from_builtins(document))
    return msgspec.convert(document, kind)
