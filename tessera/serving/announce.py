"""What `tessera serve` prints once an API process is ready to take traffic."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from tessera.ops.install import TOKEN_FILE_NAME
from tessera.runtime import Runtime
from tessera.settings import Settings


def announcer(
    settings: Settings, console: Console, *, process: int | None = None
) -> Callable[[Runtime], None]:
    """The ``on_ready`` callback of create_app; ``process``: the id of one of several API
    processes, named in its line."""

    def announce(runtime: Runtime) -> None:
        base = f"http://{settings.host}:{settings.port}"
        who = "Tessera is running" if process is None else f"Tessera API process {process} ready"
        console.print(f"[bold green]{who}[/] at {base} (data in {settings.data_dir})")
        if runtime.default_source is not None:
            console.print(f"  event source id: [bold]{runtime.default_source.id}[/]")
        if settings.api_docs:
            console.print(f"  API docs: {base}/docs")
        if not runtime.admin_exists:
            where = (
                "INSTALLATION_TOKEN"
                if settings.installation_token
                else f"the token in {settings.data_dir / TOKEN_FILE_NAME}"
            )
            console.print(
                "  [yellow]No admin yet:[/] run `tessera install --admin-email YOU@example.com`"
                f" or POST /install with {where}"
            )

    return announce
