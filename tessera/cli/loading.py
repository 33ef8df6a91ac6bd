"""What every command does first: load the settings, or say why not and exit with code 2."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from tessera.errors import ConfigurationError
from tessera.settings import Settings, load_settings

console = Console(stderr=True)


def command_settings() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as error:
        console.print(f"[bold red]Cannot start:[/] {escape(error.message)}")
        raise typer.Exit(code=2) from None
