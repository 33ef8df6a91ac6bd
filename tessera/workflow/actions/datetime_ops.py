"""Date and time arithmetic for workflows: shift, format, compare, round down, take apart.

Values are read as ISO 8601 strings ("2024-05-01T10:00:00+02:00", "2024-05-01") or epoch numbers
(seconds; a number too large to be seconds is taken as the milliseconds JavaScript trackers
send). A value without a zone is taken to be in the configured ``timezone``, and every answer is
given in it: "start of day" means the day of the people the workflow is about, not of UTC.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from tessera.errors import InvalidPayload
from tessera.workflow.action import (
    MISSING,
    Action,
    ActionConfig,
    ActionContext,
    ActionError,
    ActionResult,
    Output,
    check_path,
)

# Epoch seconds up to 1e11 reach the year 5138; anything larger is milliseconds.
_LARGEST_EPOCH_SECONDS = 1e11
_UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
# Days and weeks move the wall clock (9:00 stays 9:00 across a DST change); shorter units move
# the absolute time.
_CALENDAR_UNITS = frozenset({"days", "weeks"})

Unit = Literal["seconds", "minutes", "hours", "days", "weeks"]


def parse_datetime(value: Any, zone: tzinfo, where: str) -> datetime:
    """An aware datetime from an ISO string or epoch number; ActionError naming ``where``."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) > _LARGEST_EPOCH_SECONDS else value
        try:
            moment = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ActionError(f"{where}: {value!r} is no time this calendar can hold") from None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ActionError(f"{where}: {value[:64]!r} is not an ISO 8601 date") from None
    elif value is MISSING or value is None:
        raise ActionError(f"{where}: there is no date there")
    else:
        raise ActionError(f"{where}: a {type(value).__name__} is not a date")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment


def _on_wall_clock(local: datetime, zone: tzinfo) -> datetime:
    """``local``'s clock reading in ``zone`` again (after arithmetic on the naive reading)."""
    return local.replace(tzinfo=None).replace(tzinfo=zone)


class DatetimeOperationConfig(ActionConfig):
    path: str | None = Field(
        None,
        description="Dot path of the date (ISO 8601 or epoch number); omitted: the run's time",
    )
    operation: Literal[
        "add", "subtract", "format", "difference", "start_of", "weekday", "timestamp"
    ] = Field(
        description=(
            "add/subtract `amount` `unit`s (an ISO date); format with `format` (text); "
            "difference from this date to `other_path` in `unit`s (a number, positive when the "
            "other is later); start_of a `period` (an ISO date); weekday (1 Monday … 7 Sunday); "
            "timestamp (epoch seconds)"
        )
    )
    amount: float | None = Field(
        None, description="How many units to add or subtract (add, subtract)"
    )
    unit: Unit = Field("seconds", description="Unit of `amount` or of the difference")
    format: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="strftime pattern, e.g. %Y-%m-%d or %A for the weekday's name (format)",
    )
    other_path: str | None = Field(
        None, description="Dot path of the other date (difference); omitted: the run's time"
    )
    period: Literal["hour", "day", "week", "month", "year"] | None = Field(
        None, description="What to round down to (start_of); weeks start on Monday"
    )
    timezone: str = Field(
        "UTC",
        max_length=64,
        description="IANA zone (e.g. Europe/Warsaw) for dates without one and for answers",
    )
    target: str = Field(
        "payload@datetime", description="Writable dot path that receives the answer"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value


class DatetimeOperation(Action[DatetimeOperationConfig]):
    name = "datetime_operation"
    title = "Date and time"
    description = "Adds to, formats, compares or rounds a date and writes the answer."
    config_model = DatetimeOperationConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: DatetimeOperationConfig) -> None:
        for field_name, path in (("path", config.path), ("other_path", config.other_path)):
            if path is not None:
                _check(field_name, path, writable=False)
        _check("target", config.target, writable=True)
        needs = {"add": "amount", "subtract": "amount", "format": "format", "start_of": "period"}
        needed = needs.get(config.operation)
        if needed is not None and getattr(config, needed) is None:
            raise InvalidPayload(f"action 'datetime_operation': {config.operation} needs {needed}")
        if config.amount is not None and not math.isfinite(config.amount):
            raise InvalidPayload("action 'datetime_operation': amount must be a finite number")

    def _moment(self, path: str | None, payload: Any, context: ActionContext) -> datetime:
        zone = ZoneInfo(self.config.timezone)
        if path is None:
            now = context.now
            return now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        return parse_datetime(context.read(path, payload), zone, path)

    def _compute(self, moment: datetime, payload: Any, context: ActionContext) -> Any:
        config = self.config
        zone = ZoneInfo(config.timezone)
        local = moment.astimezone(zone)
        operation = config.operation
        if operation in ("add", "subtract"):
            amount = config.amount or 0.0
            delta = timedelta(seconds=amount * _UNIT_SECONDS[config.unit])
            if operation == "subtract":
                delta = -delta
            if config.unit in _CALENDAR_UNITS:
                return _on_wall_clock(local.replace(tzinfo=None) + delta, zone).isoformat()
            return (moment.astimezone(UTC) + delta).astimezone(zone).isoformat()
        if operation == "format":
            return local.strftime(config.format or "")
        if operation == "difference":
            other = self._moment(config.other_path, payload, context)
            return (other - moment).total_seconds() / _UNIT_SECONDS[config.unit]
        if operation == "start_of":
            return self._start_of(local, zone).isoformat()
        if operation == "weekday":
            return local.isoweekday()
        stamp = moment.timestamp()
        return int(stamp) if stamp.is_integer() else stamp

    def _start_of(self, local: datetime, zone: tzinfo) -> datetime:
        hour = local.replace(minute=0, second=0, microsecond=0)
        if self.config.period == "hour":
            return hour
        day = hour.replace(hour=0)
        if self.config.period == "week":
            day = day.replace(tzinfo=None) - timedelta(days=local.weekday())
        elif self.config.period == "month":
            day = day.replace(day=1)
        elif self.config.period == "year":
            day = day.replace(month=1, day=1)
        # Midnight by the clock of the zone, whatever its offset is on that day.
        return _on_wall_clock(day, zone)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        moment = self._moment(self.config.path, payload, context)
        try:
            answer = self._compute(moment, payload, context)
        except OverflowError:
            raise ActionError("the answer lies outside the years this calendar can hold") from None
        return Output("payload", context.write(self.config.target, answer, payload))


def _check(field_name: str, path: str, *, writable: bool) -> None:
    try:
        check_path(path, writable=writable)
    except InvalidPayload as exc:
        raise InvalidPayload(f"action 'datetime_operation': {field_name}: {exc.message}") from None


ACTIONS = (DatetimeOperation,)
