"""What `tessera doctor` reports: checks with a status and one line each, and the bounded way
every check runs.

A check that meets a service that is down, refuses, or says nothing ends as a ``failed`` row
naming the service and the reason, within its time limit; it never raises out of the report.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from tessera.errors import TesseraError
from tessera.settings import Settings, secret_values, without_url_passwords
from tessera.storage.outages import outage_error_types

# Long enough for a slow but healthy server, short enough that a report on a broken
# installation comes back while the operator is still looking at the terminal.
CHECK_SECONDS = 5.0


def service_errors() -> tuple[type[Exception], ...]:
    """What a check can meet from a service that is down, refuses or misbehaves: Tessera's
    errors and the base errors of the storage clients loaded (a client's refusal, not only its
    outages). Anything else is a bug in Tessera, and shows as one."""
    return (TesseraError, *outage_error_types())


_LONGEST_REASON = 300


class Status(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    # Values a script may want (counts, the retention found): the JSON carries them.
    facts: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "facts": self.facts,
        }


@dataclass(slots=True)
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(check.status is Status.FAILED for check in self.checks)

    def count(self, status: Status) -> int:
        return sum(1 for check in self.checks if check.status is status)

    def as_json(self) -> dict[str, Any]:
        return {"ok": not self.failed, "checks": [check.as_json() for check in self.checks]}


def ok(name: str, detail: str, **facts: Any) -> Check:
    return Check(name, Status.OK, detail, facts)


def warning(name: str, detail: str, **facts: Any) -> Check:
    return Check(name, Status.WARNING, detail, facts)


def failed(name: str, detail: str, **facts: Any) -> Check:
    return Check(name, Status.FAILED, detail, facts)


class Bounds:
    """Runs checks with a time limit each, and turns a service's failure into a failed row;
    every detail is scrubbed of the secrets in the settings."""

    def __init__(self, settings: Settings, seconds: float = CHECK_SECONDS) -> None:
        self.seconds = seconds
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted(secret_values(settings), key=len, reverse=True)

    async def check(
        self, name: str, where: str, work: Awaitable[Check], *, seconds: float | None = None
    ) -> Check:
        """``where`` names the service (``REDIS_HOST=host:port`` …) for a failure whose own
        message does not; ``seconds`` replaces the time limit (a client with a limit of its
        own gets a little more, so that its more precise message is the one shown)."""
        limit = self.seconds if seconds is None else seconds
        try:
            async with asyncio.timeout(limit):
                found = await work
        except TimeoutError:
            return failed(name, self.scrub(f"{where}: no answer within {limit:g} s"))
        except service_errors() as exc:
            reason = _reason(exc)
            return failed(name, self.scrub(reason if where in reason else f"{where}: {reason}"))
        return Check(found.name, found.status, self.scrub(found.detail), found.facts)

    async def quietly(self, work: Awaitable[None]) -> None:
        """Closing what a check opened: a service gone away must not fail or stall the report."""
        try:
            async with asyncio.timeout(self.seconds):
                await work
        except TimeoutError:
            pass
        except service_errors():
            pass

    def scrub(self, text: str) -> str:
        """``text`` without the settings' secrets and without any URL's password."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return without_url_passwords(text)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TesseraError):
        text = exc.message
    elif isinstance(exc, SQLAlchemyError):
        # The driver's own error; SQLAlchemy's wrapper adds the statement and a help link.
        cause = getattr(exc, "orig", None) or exc
        text = f"{type(cause).__name__}: {cause}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if len(first_line) > _LONGEST_REASON:
        return first_line[: _LONGEST_REASON - 1] + "…"
    return first_line
