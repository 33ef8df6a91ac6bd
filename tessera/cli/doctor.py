"""Printing `tessera doctor`'s report: a table, or with ``--json`` the same as JSON, on stdout.

The exit code is 1 when a check failed and 0 otherwise (warnings do not fail). Settings that
do not load are a failed ``settings`` row too, so a script reading the JSON always gets a
report.
"""

from __future__ import annotations

import asyncio
import json
import logging

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tessera.doctor.report import Report, Status, failed
from tessera.errors import ConfigurationError
from tessera.settings import LogLevel, load_settings

_STYLES = {Status.OK: "green", Status.WARNING: "yellow", Status.FAILED: "bold red"}
# Broker clients log every failed connection attempt; the report says what failed, once.
_CLIENT_LOGGERS = ("aiokafka", "elastic_transport", "asyncio")


def doctor_command(*, as_json: bool) -> int:
    try:
        settings = load_settings()
    except ConfigurationError as error:
        report = Report([failed("settings", error.message)])
    else:
        from tessera.doctor.checks import run_doctor
        from tessera.logs import configure_logging

        configure_logging(settings)
        if settings.logging_level is not LogLevel.DEBUG:
            for name in _CLIENT_LOGGERS:
                logging.getLogger(name).setLevel(logging.CRITICAL)
        report = asyncio.run(run_doctor(settings))
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        show(report, Console())
    return 1 if report.failed else 0


def show(report: Report, console: Console) -> None:
    table = Table(title="Tessera doctor", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        style = _STYLES[check.status]
        # Text, not markup: details quote servers' errors, which may hold "[…]".
        table.add_row(check.name, Text(check.status.value, style=style), Text(check.detail))
    console.print(table)
    counts = ", ".join(f"{report.count(status)} {status.value}" for status in Status)
    if report.failed:
        verdict = "[bold red]Something failed[/]"
    elif report.count(Status.WARNING):
        verdict = "[yellow]Working, with warnings[/]"
    else:
        verdict = "[green]Healthy[/]"
    console.print(f"{verdict}: {counts}")
