"""``tessera worker`` and ``tessera queue …``: draining the ingest queue, and looking at it.

``tessera worker`` runs TESSERA_WORKER_PROCESSES processes. With more than one, this process
only supervises: it starts each worker as a child, starts a child again when it dies (a crash
must not leave partitions without a reader once its lease is gone) and passes SIGTERM/SIGINT
on, so stopping the command stops every worker after it acknowledged its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from tessera.cli.loading import command_settings, stop
from tessera.errors import TesseraError
from tessera.settings import Settings

console = Console(stderr=True)
queue_app = typer.Typer(help="The ingest queue: status and dead letters.", no_args_is_help=True)
letters_app = typer.Typer(help="Messages the workers could not process.", no_args_is_help=True)
queue_app.add_typer(letters_app, name="dead-letters")

# A child that keeps dying is started again at most this often.
RESTART_PAUSE_S = 1.0
T = TypeVar("T")


def worker_command(
    settings: Settings,
    *,
    processes: int | None,
    concurrency: int | None,
    burst: bool,
) -> None:
    updates: dict[str, Any] = {"ingest_mode": "async"}
    if concurrency is not None:
        updates["worker_concurrency"] = concurrency
    settings = settings.model_copy(update=updates)
    count = processes or settings.worker_processes
    if count > 1 and not burst:
        raise typer.Exit(_supervise(count, concurrency))
    _run(_work(settings, burst))


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)


async def _work(settings: Settings, burst: bool) -> None:
    from tessera.logs import configure_logging
    from tessera.runtime import build_runtime, worker_options
    from tessera.workers.worker import QueueWorker

    configure_logging(settings)
    # Burst: this command drains by itself; else the runtime runs (and stops) one worker.
    runtime = build_runtime(settings, queue_workers=0 if burst else 1)
    await runtime.start()
    what = f"the {settings.queue_kind} queue {settings.queue_topic!r}"
    try:
        if burst:
            assert runtime.queue is not None
            worker = QueueWorker(
                queue=runtime.queue,
                ingestor=runtime.ingestor,
                dead_letters=runtime.storage.dead_letters,
                beats=runtime.storage.worker_beats,
                topic=settings.queue_topic,
                options=worker_options(settings),
            )
            console.print(f"[green]worker {worker.worker_id}[/] draining {what} once")
            counters = await worker.drain()
            console.print(f"done: {counters.messages} messages, {counters.events} events")
            return
        console.print(
            f"[green]worker {runtime.queue_workers[0].worker_id}[/] draining {what} "
            f"(concurrency {settings.worker_concurrency})"
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runtime.stop()


def _supervise(count: int, concurrency: int | None) -> int:
    command = [sys.executable, "-m", "tessera", "worker", "--processes", "1"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    children = [subprocess.Popen(command) for _ in range(count)]
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    console.print(f"[green]{count} worker processes[/] started")
    while not stopping:
        for index, child in enumerate(children):
            if child.poll() is not None and not stopping:
                console.print(f"[yellow]worker process {child.pid} ended ({child.returncode})[/]")
                time.sleep(RESTART_PAUSE_S)
                children[index] = subprocess.Popen(command)
        time.sleep(0.2)
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=30)
    return 0


# --- tessera queue … ----------------------------------------------------------------------


def _with_runtime(settings: Settings, use: Callable[[Any], Awaitable[T]]) -> T:
    """Runs ``use`` on a runtime that runs no workers (nothing is drained by these commands)."""
    from tessera.runtime import build_runtime

    async def work() -> T:
        runtime = build_runtime(settings, queue_workers=0)
        # Started for real: a replay in sync mode runs the pipeline, which needs the identity
        # salt and everything else start() loads.
        await runtime.start()
        try:
            return await use(runtime)
        finally:
            await runtime.stop()

    try:
        return asyncio.run(work())
    except TesseraError as error:
        stop("[bold red]Failed:[/]", error, code=1)


@queue_app.command("status")
def status_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON of GET /queue/status")
    ] = False,
) -> None:
    """Backlog per partition, live workers and their throughput, dead letters."""
    from tessera.model.common import DEFAULT_TENANT
    from tessera.workers.status import queue_status

    async def use(runtime: Any) -> dict[str, Any]:
        return await queue_status(
            mode=runtime.settings.ingest_mode,
            queue=runtime.queue,
            dead_letters=runtime.storage.dead_letters,
            beats=runtime.storage.worker_beats,
            tenant=DEFAULT_TENANT,
        )

    status = _with_runtime(command_settings(), use)
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    queue = status["queue"]
    if queue is None:
        console.print(f"ingest mode {status['mode']}: no queue")
    else:
        table = Table(
            title=f"{queue['backend']} queue {queue['topic']}: backlog {queue['backlog']}"
        )
        for column in ("partition", "lag", "owner"):
            table.add_column(column)
        for part in queue["partitions"]:
            table.add_row(str(part["partition"]), str(part["lag"]), part["owner"] or "-")
        console.print(table)
        pressure = queue.get("backpressure")
        if pressure is not None:
            console.print(
                f"backlog {pressure['backlog_bytes'] / 2**20:.1f} of "
                f"{pressure['limit_bytes'] / 2**20:.0f} MB (TESSERA_QUEUE_MAX_BACKLOG_MB), "
                f"{'accepting' if pressure['accepting'] else 'REFUSING'}; refused by this "
                f"process: {pressure['refusals']}"
            )
    console.print(
        f"workers: {len(status['workers'])}, {status['messages_per_second']} messages/s; "
        f"dead letters: {status['dead_letters']}"
    )


@letters_app.command("list")
def list_letters(limit: int = 50, offset: int = 0) -> None:
    """Newest first: id, error, attempts, events."""
    from tessera.model.common import DEFAULT_TENANT

    async def use(runtime: Any) -> tuple[list[dict[str, Any]], int]:
        result: tuple[list[dict[str, Any]], int] = await runtime.dead_letters.list(
            DEFAULT_TENANT, limit=limit, offset=offset
        )
        return result

    letters, total = _with_runtime(command_settings(), use)
    table = Table(title=f"{total} dead letter(s)")
    for column in ("id", "created", "attempts", "events", "error"):
        table.add_column(column)
    for letter in letters:
        events = letter.get("events")
        table.add_row(
            letter["id"],
            letter["created"],
            str(letter["attempts"]),
            "?" if events is None else str(len(events)),
            letter["error"][:80],
        )
    console.print(table)


@letters_app.command("replay")
def replay_letters(
    letter_id: Annotated[str | None, typer.Argument(help="One letter; omit with --all")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Every dead letter")] = False,
) -> None:
    """Send dead letters through the queue again (sync mode: through the pipeline)."""
    from tessera.model.common import DEFAULT_TENANT

    if (letter_id is None) == (not replay_all):
        console.print("[red]Give one dead letter id, or --all[/]")
        raise typer.Exit(code=2)

    async def use(runtime: Any) -> list[dict[str, Any]]:
        if letter_id is not None:
            return [await runtime.dead_letters.replay(DEFAULT_TENANT, letter_id)]
        result: list[dict[str, Any]] = await runtime.dead_letters.replay_all(DEFAULT_TENANT)
        return result

    for outcome in _with_runtime(command_settings(), use):
        console.print(f"{outcome['id']}: {outcome['replayed']}")


@letters_app.command("drop")
def drop_letter(letter_id: str) -> None:
    """Delete one dead letter for good."""
    from tessera.model.common import DEFAULT_TENANT

    async def use(runtime: Any) -> None:
        await runtime.dead_letters.drop(DEFAULT_TENANT, letter_id)

    _with_runtime(command_settings(), use)
    console.print(f"dead letter {letter_id} dropped")
