"""The visitor's time zone, from what the tracker read in the browser
(``Intl.DateTimeFormat().resolvedOptions().timeZone``), checked against the IANA database."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

# Where trackers put the zone name, most specific first. The first valid one wins, so a broken
# value in one place does not hide a good one in another.
TIMEZONE_PATHS: tuple[tuple[str, ...], ...] = (
    ("time", "tz"),
    ("time", "timezone"),
    ("timezone",),
    ("timeZone",),
    ("browser", "timezone"),
    ("browser", "timeZone"),
)
# The longest IANA name is about 30 characters; anything much longer is not one.
MAX_NAME_LENGTH = 64


def resolve_timezone(context: Mapping[str, Any]) -> str | None:
    """The IANA name of the visitor's zone (canonical spelling), or None. Never raises."""
    for path in TIMEZONE_PATHS:
        value: Any = context
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, str) and (name := canonical_timezone(value)) is not None:
            return name
    return None


def canonical_timezone(name: str) -> str | None:
    """The database's spelling of a zone name ("europe/warsaw " gives "Europe/Warsaw").

    None for names the database does not know, numeric offsets ("+02:00", "-120") included:
    they do not say which rules (summer time) apply."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        return None
    # Looked up in the list of known zones rather than by opening ZoneInfo(name) directly: a
    # client's string never reaches the file system (no "../" paths) and case is forgiven.
    return _known_zones().get(name.lower())


def local_time(utc: datetime, tz: str | None) -> datetime | None:
    """``utc`` on the visitor's wall clock, or None when the zone is missing or unknown. A naive
    ``utc`` is taken to be UTC."""
    if tz is None or (name := canonical_timezone(tz)) is None:
        return None
    if utc.tzinfo is None:
        utc = utc.replace(tzinfo=UTC)
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # Listed but unreadable (the tz files changed underneath the process).
        return None
    return utc.astimezone(zone)


@functools.cache
def _known_zones() -> dict[str, str]:
    # available_timezones() scans the tz database once (about 50 ms); the map is kept.
    return {name.lower(): name for name in available_timezones()}
