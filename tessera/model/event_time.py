"""How far an event's own time may lie from the moment it is taken in.

Event times come from clients. Records are filed (partitioned) by time, so an unbounded time
would let one client create a partition per distinct day of the last century. Two rules:

- the live path (/track) keeps every event's own time, but files it no further than
  ``EVENT_PAST_BOUND`` before and ``EVENT_FUTURE_BOUND`` after its arrival (``filed_moment``)
  and says so in the answer (``live_time_warning``): a device with a wrong clock loses no
  event, and the operator learns that history belongs in an import;
- a history import (pipeline/history.py) files events by their own time, and refuses those
  earlier than ``IMPORT_EARLIEST`` (or than the event retention) or later than the import
  plus ``EVENT_FUTURE_BOUND`` (``import_time_problem``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EVENT_PAST_BOUND = timedelta(days=2 * 366)
EVENT_FUTURE_BOUND = timedelta(days=1)
# The earliest time an import takes: before it, a time is almost always a broken clock or a
# zero date (1970-01-01), and each distinct day would be a partition of its own.
IMPORT_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def filed_moment(happened: datetime, arrived: datetime) -> datetime:
    """The moment a live event is filed under: its time, within the bounds around arrival."""
    return min(max(happened, arrived - EVENT_PAST_BOUND), arrived + EVENT_FUTURE_BOUND)


def live_time_warning(where: str, happened: datetime, arrived: datetime) -> str | None:
    """A warning for the answer when a live event's time is filed elsewhere, else None."""
    aware = happened if happened.tzinfo is not None else happened.replace(tzinfo=UTC)
    filed = filed_moment(aware, arrived)
    if filed == aware:
        return None
    side = "before" if aware < filed else "after"
    return (
        f"{where}: {aware.isoformat()} lies too far {side} the time it arrived; the event "
        f"keeps its time but is filed under {filed.date().isoformat()} "
        "(import history with `tessera import`)"
    )


def import_time_problem(
    happened: datetime, imported: datetime, retention_days: int | None
) -> str | None:
    """Why an imported event's time is refused (a short reason to count by), or None."""
    earliest = IMPORT_EARLIEST
    reason = f"time before {IMPORT_EARLIEST.date().isoformat()}"
    if retention_days is not None:
        kept_from = imported - timedelta(days=retention_days)
        if kept_from > earliest:
            earliest = kept_from
            reason = f"time older than the event retention ({retention_days} days)"
    if happened < earliest:
        return reason
    if happened > imported + EVENT_FUTURE_BOUND:
        return "time more than a day after the import"
    return None
