"""`tessera import FILE`: send a history file to a running server (docs/import.md).

Two passes. The first reads and checks the whole file into the checkpoint, sorted by visitor
and time (ops/import_checkpoint.py); a bad line stops it there, naming the line, before
anything is sent. The second sends the plan in chunks to POST /import/events with the server
source's key, and records each acknowledged chunk, so that running the same command again
after an interruption continues where it stopped. Both show a progress bar.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tessera.collect.history_lines import LineProblem
from tessera.ops.import_checkpoint import Checkpoint, CheckpointMismatch, Chunk, Totals

# A busy or restarting server (503, 429) is waited for, this many times per chunk.
MAX_WAITS = 30
# The longest wait a Retry-After may ask for.
MAX_WAIT_S = 30.0
# A request of a chunk may take this long: a chunk of thousands of events is taken in by the
# full pipeline before the answer.
REQUEST_TIMEOUT_S = 600.0
_BODY_LINE = re.compile(r"^line (\d+): ")


class ImportFailed(Exception):
    """Stops the import with a message for the operator; the checkpoint keeps what is done."""


@dataclass(slots=True)
class ImportOptions:
    file: Path
    url: str
    source: str
    key: str
    checkpoint: Path
    restart: bool
    chunk_lines: int
    chunk_bytes: int
    max_depth: int


def run_import(options: ImportOptions, console: Console) -> Totals:
    if options.restart:
        options.checkpoint.unlink(missing_ok=True)
    checkpoint = Checkpoint(options.checkpoint)
    try:
        _plan(checkpoint, options, console)
        return _send(checkpoint, options, console)
    finally:
        checkpoint.close()


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _plan(checkpoint: Checkpoint, options: ImportOptions, console: Console) -> None:
    if checkpoint.planned:
        try:
            checkpoint.check_same_file(options.file)
        except CheckpointMismatch as mismatch:
            raise ImportFailed(str(mismatch)) from None
        console.print(
            f"Resuming from {checkpoint.path}: {checkpoint.done:,} of {checkpoint.total:,} "
            "events sent before"
        )
        return
    size = options.file.stat().st_size
    with _progress(console) as progress:
        task = progress.add_task("Checking and sorting", total=None, rate="")
        read = 0

        def advanced(lines: int) -> None:
            nonlocal read
            read += lines
            progress.update(task, completed=read, rate=f"{size:,} bytes")

        try:
            total = checkpoint.plan(
                options.file,
                max_depth=options.max_depth,
                chunk_lines=options.chunk_lines,
                chunk_bytes=options.chunk_bytes,
                progress=advanced,
            )
        except LineProblem as problem:
            checkpoint.close()
            options.checkpoint.unlink(missing_ok=True)
            raise ImportFailed(f"{options.file}, {problem.message}; nothing was sent") from None
    console.print(f"{total:,} events to import, sorted by visitor and time")


def _send(checkpoint: Checkpoint, options: ImportOptions, console: Console) -> Totals:
    totals = checkpoint.totals()
    target = f"{options.url.rstrip('/')}/import/events"
    headers = {
        "Authorization": f"Bearer {options.key}",
        "Content-Type": "application/x-ndjson",
    }
    started = time.monotonic()
    sent_now = 0
    with (
        httpx.Client(timeout=REQUEST_TIMEOUT_S, headers=headers) as client,
        _progress(console) as progress,
    ):
        task = progress.add_task(
            "Importing", total=checkpoint.total, completed=checkpoint.done, rate=""
        )
        for chunk in checkpoint.chunks():
            answer = _post(client, target, options.source, chunk, options.file)
            totals.add(answer)
            checkpoint.acknowledge(chunk, totals)
            sent_now += len(chunk.lines)
            rate = sent_now / max(time.monotonic() - started, 1e-6)
            progress.update(task, completed=chunk.last, rate=f"{rate:,.0f} events/s")
    return totals


def _post(
    client: httpx.Client, target: str, source: str, chunk: Chunk, file: Path
) -> dict[str, object]:
    for attempt in range(MAX_WAITS):
        try:
            answer = client.post(target, params={"source": source}, content=chunk.body)
        except httpx.TransportError as error:
            if attempt == MAX_WAITS - 1:
                raise ImportFailed(
                    f"the server at {target} cannot be reached ({type(error).__name__}); run "
                    "the same command again to continue"
                ) from None
            time.sleep(min(2.0**attempt, MAX_WAIT_S))
            continue
        if answer.status_code == 200:
            body = answer.json()
            if not isinstance(body, dict):
                raise ImportFailed(f"the server answered something else than counts: {body!r}")
            return body
        if answer.status_code in (429, 503):
            time.sleep(_retry_after(answer, attempt))
            continue
        raise ImportFailed(_refusal(answer, chunk, file))
    raise ImportFailed("the server stayed busy; run the same command again to continue")


def _retry_after(answer: httpx.Response, attempt: int) -> float:
    try:
        return min(float(answer.headers.get("retry-after", "")), MAX_WAIT_S)
    except ValueError:
        return min(2.0**attempt, MAX_WAIT_S)


def _refusal(answer: httpx.Response, chunk: Chunk, file: Path) -> str:
    try:
        detail = str(answer.json().get("detail", answer.text))
    except ValueError:
        detail = answer.text[:500]
    # The server counts lines within the request: name the line of the file instead.
    found = _BODY_LINE.match(detail)
    if found is not None and 1 <= int(found.group(1)) <= len(chunk.lines):
        line = chunk.lines[int(found.group(1)) - 1]
        detail = f"{file}, line {line}: {detail[found.end() :]}"
    return f"the server refused the import ({answer.status_code}): {detail}"
