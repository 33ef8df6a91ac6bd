"""The application of one API process of several: uvicorn's supervisor spawns a fresh Python
for each and calls ``served_app`` there (an import string, since a built application cannot be
handed to another process)."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from uvicorn.config import STARTUP_FAILURE

from tessera.errors import TesseraError
from tessera.serving.orphans import end_with_supervisor

APP_FACTORY = "tessera.serving.worker_app:served_app"


def served_app() -> Any:
    from tessera.api.app import create_app
    from tessera.logs import configure_logging
    from tessera.serving.announce import announcer
    from tessera.settings import load_settings

    end_with_supervisor()
    console = Console(stderr=True)
    try:
        # The supervisor's environment, checked there already (with --host/--port written
        # into it), so this only fails if the process cannot read it at all.
        settings = load_settings()
        configure_logging(settings)
        return create_app(settings, on_ready=announcer(settings, console, process=os.getpid()))
    except TesseraError as error:
        console.print(f"[bold red]API process cannot start:[/] {escape(error.message)}")
        # uvicorn's supervisor stops instead of starting the process again and again.
        sys.exit(STARTUP_FAILURE)
