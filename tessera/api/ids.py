"""The ids clients choose for configuration records (sources, rules, workflows, segments,
destinations): they travel in URLs, so they are kept URL-safe."""

from __future__ import annotations

import re

URL_SAFE_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


def url_safe_id(value: str | None) -> str | None:
    """For pydantic validators: ValueError saying what an id may hold; None passes."""
    if value is not None and not URL_SAFE_ID.match(value):
        raise ValueError("must be 1-128 characters of letters, digits, '.', '_', '~' or '-'")
    return value
