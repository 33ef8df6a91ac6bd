"""`tessera backup …`, `tessera storage retention|reshard`: looking after the Elasticsearch records.

They talk to the cluster of ELASTIC_HOST, with the prefix, partitioning and TESSERA_SNAPSHOT_* /
TESSERA_RETENTION_* settings the server uses. Without ELASTIC_HOST the records are in the
embedded SQLite file; these commands then say that they apply to the distributed mode only
and exit with 2, the exit code of a configuration the command cannot work with.

Tables (what a script may read) go to stdout; progress and messages go to stderr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)
from rich.table import Table

from tessera.cli.loading import stop
from tessera.errors import ConfigurationError, TesseraError
from tessera.model.common import utcnow
from tessera.settings import Settings, load_settings
from tessera.storage.elastic.mode import NotDistributed, elastic_hosts
from tessera.storage.extras import ELASTIC, require

if TYPE_CHECKING:
    from elasticsearch import AsyncElasticsearch

# The Elasticsearch client is imported by the commands that use it, not by every `tessera` run,
# and only once `_distributed()` found ELASTIC_HOST set and the client installed.

backup_app = typer.Typer(
    help="Snapshots of the Elasticsearch indices (distributed mode).", no_args_is_help=True
)
storage_app = typer.Typer(
    help="Maintenance of the Elasticsearch record storage (distributed mode).",
    no_args_is_help=True,
)

T = TypeVar("T")


def _messages() -> Console:
    # Made per command, so the terminal width (and COLUMNS) of this run is the one used.
    return Console(stderr=True)


def _tables() -> Console:
    return Console()


def _distributed() -> Settings:
    """The settings, once they name ELASTIC_HOST and its client library is installed; else one
    line and exit code 2. Each command calls it before importing the Elasticsearch modules."""
    console = _messages()
    try:
        settings = load_settings()
        elastic_hosts(settings)
        require(ELASTIC)
    except NotDistributed as error:
        stop("[bold yellow]Not available:[/]", error, code=2, on=console)
    except ConfigurationError as error:
        stop("[bold red]Cannot start:[/]", error, code=2, on=console)
    return settings


def _run(work: Callable[[Settings, AsyncElasticsearch, Console], Awaitable[T]]) -> T:
    """Settings, a client of ELASTIC_HOST, the work, and one clear line for each failure."""
    settings = _distributed()
    from elasticsearch import ApiError, TransportError

    from tessera.storage.elastic import maintenance
    from tessera.storage.elastic.client import open_client

    console = _messages()
    connection = maintenance.connection(settings)

    async def session() -> T:
        client = open_client(connection)
        try:
            return await work(settings, client, console)
        finally:
            await client.close()

    try:
        return asyncio.run(session())
    except ConfigurationError as error:
        stop("[bold red]Configuration:[/]", error, code=2, on=console)
    except TesseraError as error:
        stop("[bold red]Failed:[/]", error, code=1, on=console)
    except ApiError as error:
        console.print(
            f"[bold red]Elasticsearch at {connection.where()} refused:[/] "
            f"{error.meta.status} {error.message}"
        )
        raise typer.Exit(code=1) from None
    except TransportError as error:
        console.print(
            f"[bold red]Elasticsearch at {connection.where()} failed:[/] "
            f"{type(error).__name__}: {error.message}"
        )
        raise typer.Exit(code=1) from None


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment is not None else "-"


# --- backup ----------------------------------------------------------------------------------


@backup_app.command("repository")
def backup_repository(
    show: Annotated[
        bool, typer.Option("--show", help="Only show the registered repository")
    ] = False,
) -> None:
    """Register (or update) the snapshot repository of TESSERA_SNAPSHOT_*, and show it."""
    _distributed()
    from tessera.storage.elastic import maintenance
    from tessera.storage.elastic.snapshots import register_repository, registered_repository

    async def work(settings: Settings, client: AsyncElasticsearch, console: Console) -> None:
        name = settings.snapshot_repository
        if not show:
            wanted = maintenance.repository(settings)
            warnings = await register_repository(client, wanted)
            console.print(f"[green]Repository {name} ({wanted.type}) registered and verified[/]")
            for warning in warnings:
                console.print(f"  [yellow]warning:[/] {warning}")
        found = await registered_repository(client, name)
        if found is None:
            console.print(f"[yellow]No repository {name}[/]: run `tessera backup repository`")
            raise typer.Exit(code=1)
        table = Table("repository", "type", "settings")
        shown = ", ".join(f"{key}={value}" for key, value in sorted(found["settings"].items()))
        table.add_row(name, str(found["type"]), shown)
        _tables().print(table)

    _run(work)


@backup_app.command("create")
def backup_create(
    name: Annotated[
        str | None, typer.Option(help="Snapshot name; default <prefix>-<UTC date-time>")
    ] = None,
) -> None:
    """Snapshot every index of this installation's prefix (registers the repository first)."""
    _distributed()
    from tessera.storage.elastic import maintenance
    from tessera.storage.elastic.snapshots import (
        register_repository,
        registered_repository,
        start_snapshot,
        wait_for_snapshot,
    )

    async def work(settings: Settings, client: AsyncElasticsearch, console: Console) -> None:
        repository = settings.snapshot_repository
        if await registered_repository(client, repository) is None:
            await register_repository(client, maintenance.repository(settings))
            console.print(f"Repository {repository} registered")
        names = maintenance.names(settings)
        snapshot = await start_snapshot(client, repository, names, name)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn())
        with Progress(*columns, MofNCompleteColumn(), console=console, transient=True) as bar:
            task = bar.add_task(f"Snapshot {snapshot} (shards)", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total or None)

            info = await wait_for_snapshot(client, repository, snapshot, on_progress=progress)
        if info.state != "SUCCESS":
            console.print(f"[bold red]Snapshot {snapshot} {info.state}[/]")
            for failure in info.failures[:10]:
                console.print(f"  {failure}")
            raise typer.Exit(code=1)
        console.print(
            f"[green]Snapshot {snapshot} done[/]: {len(info.indices)} indices, "
            f"{info.shards_total} shards, in repository {repository}"
        )

    _run(work)


@backup_app.command("list")
def backup_list() -> None:
    """The snapshots in the repository, oldest first."""
    _distributed()
    from tessera.storage.elastic.snapshots import list_snapshots

    async def work(settings: Settings, client: AsyncElasticsearch, console: Console) -> None:
        snapshots = await list_snapshots(client, settings.snapshot_repository)
        if not snapshots:
            console.print(f"No snapshots in repository {settings.snapshot_repository}")
            return
        table = Table("snapshot", "state", "prefix", "started", "indices", "shards")
        for info in snapshots:
            table.add_row(
                info.name,
                info.state,
                info.prefix or "-",
                _when(info.started),
                str(len(info.indices)),
                f"{info.shards_total - info.shards_failed}/{info.shards_total}",
            )
        _tables().print(table)

    _run(work)


@backup_app.command("restore")
def backup_restore(
    name: Annotated[str, typer.Argument(help="The snapshot, as `tessera backup list` shows it")],
    replace: Annotated[
        bool, typer.Option(help="Delete every index of this prefix first (asks unless --yes)")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before --replace")] = False,
) -> None:
    """Restore a snapshot into an empty prefix (or --replace its indices), then the templates.

    Indices keep their names; the templates are written again from the schema."""
    _distributed()
    from tessera.storage.elastic import maintenance
    from tessera.storage.elastic.schema import ElasticSchema
    from tessera.storage.elastic.snapshots import restore_snapshot

    async def work(settings: Settings, client: AsyncElasticsearch, console: Console) -> None:
        names = maintenance.names(settings)
        schema = ElasticSchema(client, names, maintenance.shapes(settings))
        with console.status(f"Restoring {name}…"):
            report = await restore_snapshot(
                client, settings.snapshot_repository, name, names, schema, replace=replace
            )
        if report.replaced:
            console.print(f"Deleted {len(report.replaced)} indices of prefix {names.prefix}")
        console.print(
            f"[green]Restored {name}[/]: {len(report.indices)} indices of "
            f"{len(report.tenants)} tenants; templates written again"
        )
        for warning in report.warnings:
            console.print(f"  [yellow]warning:[/] {warning}")

    if replace and not yes:
        typer.confirm(
            "Delete every index of this installation's prefix before restoring?", abort=True
        )
    _run(work)


# --- storage ---------------------------------------------------------------------------------


@storage_app.command("retention")
def storage_retention(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be deleted")
    ] = False,
) -> None:
    """Delete the partitions whose range ended more than TESSERA_RETENTION_*_DAYS ago.

    Where the cluster has ILM, also install lifecycle policies that delete on the same rule."""
    _distributed()
    from tessera.storage.elastic import maintenance
    from tessera.storage.elastic.retention import apply_retention, ilm_state, install_lifecycle

    async def work(settings: Settings, client: AsyncElasticsearch, console: Console) -> None:
        ages = maintenance.retention_ages(settings)
        if not ages:
            console.print("No TESSERA_RETENTION_*_DAYS set: every partition is kept")
            return
        kept = ", ".join(f"{kind} {age.days} days" for kind, age in sorted(ages.items()))
        console.print(f"Retention: {kept} after a partition's time range ended")
        names, now = maintenance.names(settings), utcnow()
        with console.status("Looking for expired partitions…"):
            report = await apply_retention(client, names, now, ages, dry_run=dry_run)
        if report.expired:
            table = Table("index", "kind", "tenant", "partition", "range ended")
            for expiry in report.expired:
                table.add_row(
                    expiry.index,
                    expiry.kind,
                    expiry.tenant,
                    expiry.partition,
                    _when(expiry.ends_at),
                )
            _tables().print(table)
        count = len(report.expired)
        if dry_run:
            console.print(f"[yellow]Dry run:[/] {count} partitions would be deleted")
            state, why = await ilm_state(client)
            console.print(f"ILM: {state} ({why})")
            return
        console.print(f"[green]Deleted {len(report.deleted)} partitions[/]")
        lifecycle = await install_lifecycle(client, names, now, ages)
        console.print(lifecycle.message)

    _run(work)


@storage_app.command("reshard")
def storage_reshard(
    kind: Annotated[
        str, typer.Option("--kind", help="event, session or profile", show_default=False)
    ],
    shards: Annotated[
        int, typer.Option("--shards", min=1, help="Primary shards of every partition")
    ],
    replicas: Annotated[
        int | None,
        typer.Option("--replicas", min=0, help="Replicas per shard; default: as configured"),
    ] = None,
    settle_seconds: Annotated[
        float | None,
        typer.Option(
            "--settle-seconds",
            min=0,
            help="How long the servers get to see the new generation before the copy starts",
        ),
    ] = None,
) -> None:
    """Copy a kind's partitions into new indices with another shard count, behind the alias.

    The servers keep writing and reading meanwhile; see tessera/storage/elastic/reshard.py for
    what is guaranteed. Interrupted, run the same command again: it continues."""
    _distributed()
    from tessera.storage.elastic import maintenance
    from tessera.storage.elastic.generations import read_generations
    from tessera.storage.elastic.naming import PARTITIONED_KINDS
    from tessera.storage.elastic.reshard import DEFAULT_SETTLE_S, reshard
    from tessera.storage.elastic.schema import ElasticSchema, IndexShape

    if kind not in PARTITIONED_KINDS:
        _messages().print(f"[bold red]--kind:[/] one of {', '.join(PARTITIONED_KINDS)}")
        raise typer.Exit(code=2)

    async def work(settings: Settings, client: AsyncElasticsearch, console: Console) -> None:
        names = maintenance.names(settings)
        schema = ElasticSchema(client, names, maintenance.shapes(settings))
        state = (await read_generations(client, names))[kind]
        wanted = IndexShape(
            shards, replicas if replicas is not None else schema.shape_of(state).replicas
        )
        console.print(
            f"Resharding {kind} to {wanted.shards} shards, {wanted.replicas} replicas "
            f"(generation {state.generation} → "
            f"{state.generation if state.moving_from else state.generation + 1})"
        )
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            tasks: dict[str, TaskID] = {}

            def partitions(found: list[tuple[str, int]]) -> None:
                for index, documents in found:
                    tasks[index] = bar.add_task(index, total=documents or 1)

            def progress(index: str, done: int, total: int) -> None:
                bar.update(tasks[index], completed=done, total=total or 1)

            report = await reshard(
                client,
                names,
                schema,
                kind,
                wanted,
                settle_s=settle_seconds if settle_seconds is not None else DEFAULT_SETTLE_S,
                on_partitions=partitions,
                on_progress=progress,
            )
            for task in tasks.values():
                total = bar.tasks[task].total or 1
                bar.update(task, completed=total)
        table = Table("moved from", "to", "documents")
        for moved in report.moved:
            table.add_row(moved.source, moved.target, str(moved.documents))
        _tables().print(table)
        console.print(
            f"[green]{kind} resharded[/]: {len(report.moved)} partitions, "
            f"{sum(m.documents for m in report.moved)} documents, now generation "
            f"{report.to_generation} with {report.shards} shards"
            + (" (continued an unfinished reshard)" if report.resumed else "")
        )
        configured = maintenance.shapes(settings)[kind]
        if configured.shards != report.shards:
            console.print(
                f"  note: new {kind} partitions keep {report.shards} shards (stored with the "
                f"generation); set TESSERA_ELASTIC_{kind.upper()}_SHARDS={report.shards} so "
                "the settings say the same"
            )

    _run(work)
