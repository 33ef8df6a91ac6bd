"""What a search asks of a store: a parsed condition, an order, and a page."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal

import msgspec

from tessera.errors import InvalidPayload, SearchTimedOut
from tessera.query import Condition

_FIELD = re.compile(r"^(profile|event|session)@([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+){0,15})$")


@dataclass(frozen=True, slots=True)
class SortKey:
    path: tuple[str, ...]
    descending: bool
    # Whose field (profile, event, session); None when the sort is not tied to one.
    entity: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the previous page ended, for keyset paging on the default order (newest first):
    no row is skipped or repeated however deep the reader pages."""

    moment: float
    id: str

    def encode(self) -> str:
        raw = msgspec.json.encode([self.moment, self.id])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def decode(text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            moment, record_id = msgspec.json.decode(raw, type=tuple[float, str])
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise InvalidPayload("cursor: not a cursor this server gave out") from None
        return Cursor(moment, record_id)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    condition: Condition | None
    limit: int
    offset: int = 0
    sort: SortKey | None = None
    cursor: Cursor | None = None
    # Longest the store may take (TESSERA_SEARCH_TIMEOUT_SECONDS for the API's searches);
    # past it the search is stopped and SearchTimedOut raised. None: no limit of its own.
    timeout_s: float | None = None


def timed_out(timeout_s: float) -> SearchTimedOut:
    return SearchTimedOut(
        f"the search took longer than {timeout_s:g} s (TESSERA_SEARCH_TIMEOUT_SECONDS) and "
        "was stopped; narrow the condition or ask for a smaller page"
    )


def parse_sort(entity: str, text: str | None, order: Literal["asc", "desc"]) -> SortKey | None:
    if text is None:
        return None
    match = _FIELD.match(text.strip())
    if match is None or match.group(1) != entity:
        raise InvalidPayload(f"sort: expected a field like {entity}@traits.name, got {text!r}")
    return SortKey(tuple(match.group(2).split(".")), descending=order == "desc", entity=entity)


def json_path(path: tuple[str, ...]) -> str:
    # Segments are checked by _FIELD (letters, digits, '_' and '-'), so quoting them is safe.
    return "$" + "".join(f'."{segment}"' for segment in path)
