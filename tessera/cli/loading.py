"""What every command shares: loading the settings, and ending with one line and an exit code
when something stops it."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from tessera.errors import ConfigurationError, TesseraError
from tessera.settings import Settings, load_settings

console = Console(stderr=True)


def stop(label: str, error: TesseraError, *, code: int, on: Console = console) -> NoReturn:
    """One line, ``label`` then the message as it is (never read as markup: a message may name
    ``[elastic]``), and exit ``code``."""
    on.print(f"{label} {escape(error.message)}")
    raise typer.Exit(code=code) from None


def command_settings() -> Settings:
    """The settings, or one line and exit code 2."""
    try:
        return load_settings()
    except ConfigurationError as error:
        stop("[bold red]Cannot start:[/]", error, code=2)
