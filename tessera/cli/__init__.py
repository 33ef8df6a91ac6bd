"""The ``tessera`` command."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tessera.cli.elastic import backup_app, storage_app
from tessera.cli.loading import command_settings, stop
from tessera.cli.workers import queue_app
from tessera.errors import ConfigurationError, TesseraError
from tessera.settings import Settings, shown_settings

app = typer.Typer(
    help="Tessera, an open-source Customer Data Platform.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
# uvicorn's exit code for a server that did not start (its lifespan failed).
STARTUP_FAILED = 3


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides TESSERA_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides TESSERA_PORT")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="API processes; overrides TESSERA_API_WORKERS", min=1, max=256),
    ] = None,
) -> None:
    """Run the CDP: collection (/track, /collect) and the management API."""
    from tessera.api.app import create_app
    from tessera.logs import configure_logging
    from tessera.serving.announce import announcer
    from tessera.serving.processes import api_process_count
    from tessera.serving.server import serve_here, serve_processes

    settings = command_settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    configure_logging(settings)
    try:
        count = api_process_count(settings, workers)
    except ConfigurationError as error:
        stop("[bold red]Cannot start:[/]", error, code=2)
    _check_services(settings)
    try:
        if count > 1:
            serve_processes(settings, count, console)
        elif not serve_here(settings, create_app(settings, on_ready=announcer(settings, console))):
            raise typer.Exit(code=STARTUP_FAILED)
    except TesseraError as error:
        stop("[bold red]Cannot start:[/]", error, code=2)


@app.command()
def worker(
    processes: Annotated[
        int | None, typer.Option(help="Overrides TESSERA_WORKER_PROCESSES", min=1, max=64)
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Overrides TESSERA_WORKER_CONCURRENCY", min=1, max=4096)
    ] = None,
    burst: Annotated[
        bool, typer.Option(help="Stop once the queue is empty instead of waiting for more")
    ] = False,
) -> None:
    """Drain the ingest queue: run the pipeline on queued requests (async mode)."""
    from tessera.cli.workers import worker_command

    settings = command_settings()
    _check_services(settings)
    try:
        worker_command(settings, processes=processes, concurrency=concurrency, burst=burst)
    except TesseraError as error:
        stop("[bold red]Worker stopped:[/]", error, code=2)


@app.command()
def install(
    admin_email: Annotated[
        str | None, typer.Option(envvar="TESSERA_ADMIN_EMAIL", help="E-mail of the admin")
    ] = None,
    admin_password: Annotated[
        str | None,
        typer.Option(
            envvar="TESSERA_ADMIN_PASSWORD", help="Asked for when an e-mail is given without it"
        ),
    ] = None,
) -> None:
    """Create the storage schema and, when asked, the first admin. Safe to run again."""
    from tessera.ops.install import install as run_install
    from tessera.storage.factory import build_storage
    from tessera.workers.retention import apply_queue_retention

    settings = command_settings()
    if admin_email and not admin_password:
        admin_password = getpass.getpass("Admin password: ")

    async def work() -> None:
        storage = build_storage(settings)
        try:
            report = await run_install(
                storage, settings, admin_email=admin_email, admin_password=admin_password
            )
        finally:
            await storage.close()
        console.print(
            "[green]Schema ready[/]" + (" (created)" if report.schema_created else " (existed)")
        )
        for line in await apply_queue_retention(settings):
            console.print(f"[green]Queue retention:[/] {line}")
        if report.admin_created:
            console.print(f"[green]Admin {admin_email} created[/]")
        elif report.admin_exists:
            console.print("An admin already exists; none created.")
        else:
            console.print("[yellow]No admin yet:[/] pass --admin-email to create one.")

    try:
        asyncio.run(work())
    except TesseraError as error:
        stop("[bold red]Install failed:[/]", error, code=1)


def _check_services(settings: Settings) -> None:
    """A MySQL/MariaDB, Elasticsearch or Redis that cannot be reached (or a config schema that
    does not fit) stops start-up here with one line, not with a traceback from inside the
    server's start."""
    from tessera.doctor.preflight import check_services

    try:
        asyncio.run(check_services(settings))
    except TesseraError as error:
        stop("[bold red]Cannot start:[/]", error, code=2)


@app.command()
def migrate() -> None:
    """Bring the configuration database's schema up to this version (MySQL/MariaDB: apply the
    pending migrations). Safe to run again; run it after upgrading Tessera."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from tessera.storage.config_database import (
        MigrationReport,
        describe_config_database,
        migrate_config_database,
    )

    settings = command_settings()
    console.print(f"Configuration database: {describe_config_database(settings)}")

    async def work() -> MigrationReport:
        columns = (SpinnerColumn(), TextColumn("{task.description}"))
        with Progress(*columns, console=console, transient=True) as progress:
            progress.add_task("Migrating the schema…", total=None)

            def applied(revision: str, message: str) -> None:
                summary = message.strip().splitlines()[0] if message.strip() else ""
                progress.console.print(f"  [green]applied[/] {revision} {summary}")

            return await migrate_config_database(settings, applied)

    try:
        report = asyncio.run(work())
    except TesseraError as error:
        stop("[bold red]Migration failed:[/]", error, code=1)
    if not report.migrated:
        console.print("[green]Schema ready[/] (the embedded SQLite file needs no migrations)")
    elif report.applied:
        console.print(
            f"[green]Schema at revision {report.head}[/] ({len(report.applied)} applied, "
            f"was {report.before or 'empty'})"
        )
    else:
        console.print(f"[green]Schema already at revision {report.head}[/]; nothing to do")


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Check the installation, read only: stores, Redis, Elasticsearch, the queue and its
    retention. Exit code 1 when a check failed (warnings do not fail)."""
    from tessera.cli.doctor import doctor_command

    raise typer.Exit(code=doctor_command(as_json=as_json))


@app.command("settings")
def show_settings(
    markdown: Annotated[bool, typer.Option(help="Print the docs/settings.md table")] = False,
) -> None:
    """List every setting; with --markdown, the table kept in docs/settings.md."""
    from tessera.settings_doc import settings_markdown

    if markdown:
        print(settings_markdown(), end="")
        return
    settings = command_settings()
    # Secrets print as "(hidden)" by their type, URL passwords as "***".
    for name, value in shown_settings(settings).items():
        print(f"{name} = {value}")


@app.command("import")
def import_history(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSON lines, one event each")
    ],
    source: Annotated[
        str, typer.Option(envvar="TESSERA_IMPORT_SOURCE", help="Id of the server event source")
    ],
    key: Annotated[
        str,
        typer.Option(
            envvar="TESSERA_IMPORT_KEY",
            prompt="Key of the event source",
            hide_input=True,
            help="The source's key (better given by TESSERA_IMPORT_KEY than on the command line)",
        ),
    ],
    url: Annotated[
        str, typer.Option(envvar="TESSERA_IMPORT_URL", help="The server")
    ] = "http://127.0.0.1:8686",
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint file (default: FILE.import-checkpoint)")
    ] = None,
    restart: Annotated[
        bool, typer.Option(help="Forget the checkpoint and import from the start")
    ] = False,
    chunk_lines: Annotated[int, typer.Option(min=1, max=10_000)] = 5_000,
    chunk_bytes: Annotated[
        int, typer.Option(min=1024, help="At most the server's TESSERA_MAX_BODY_BYTES")
    ] = 1_000_000,
    max_depth: Annotated[int, typer.Option(min=4, max=512)] = 32,
) -> None:
    """Import history (Tracardi- or Tessera-shaped events, JSON lines) with its own times.
    Resumable: run the same command again after an interruption. See docs/import.md."""
    from tessera.cli.history_import import ImportFailed, ImportOptions, run_import

    options = ImportOptions(
        file=file,
        url=url,
        source=source,
        key=key,
        checkpoint=checkpoint or file.with_name(file.name + ".import-checkpoint"),
        restart=restart,
        chunk_lines=chunk_lines,
        chunk_bytes=chunk_bytes,
        max_depth=max_depth,
    )
    try:
        totals = run_import(options, console)
    except ImportFailed as failure:
        console.print(f"[bold red]Import stopped:[/] {failure}")
        raise typer.Exit(code=1) from None
    console.print(
        f"[green]Imported[/] {totals.stored:,} events; {totals.duplicates:,} were stored before"
    )
    for reason, count in sorted(totals.refused.items()):
        console.print(f"[yellow]Refused[/] {count:,} events: {reason}")


# Backups and retention of the Elasticsearch records (distributed mode): tessera/cli/elastic.py
app.add_typer(backup_app, name="backup")
app.add_typer(storage_app, name="storage")
app.add_typer(queue_app, name="queue")


def main() -> None:
    app()
