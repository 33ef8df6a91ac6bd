"""Counting what a running server sends to Redis, from the outside: Redis ``MONITOR``.

MONITOR reports every command the server runs, from every client: the commands a script runs
are reported too (from the client ``lua``), and each command of a pipeline on its own. So the
count of commands *not* run by a script, among those naming the installation's key prefix, is
an upper bound of the round trips that installation made (exact when it sends no pipeline),
and other installations sharing the Redis server are not counted.

Windows are cut by markers (``ECHO``) sent by the counting client itself: a command that the
monitor reports between the two markers was run between them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from redis.asyncio import Redis

from tests.support.redis_service import new_client

WAIT_S = 10.0


@dataclass
class Window:
    """The commands naming the prefix seen between ``start`` and ``stop`` (one string each)."""

    commands: list[str] = field(default_factory=list)


class RedisCommandCounter:
    """A MONITOR connection on its own thread and event loop (the tests drive HTTP in sync)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._seen: list[str] = []
        self._marks: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._task: concurrent.futures.Future[None] | None = None
        self._client: Redis | None = None

    def start(self) -> None:
        self._thread.start()
        self._client = new_client()
        self._task = asyncio.run_coroutine_threadsafe(self._monitor(), self._loop)
        # MONITOR reports only what comes after it is attached: until a marker shows, it is not.
        for _attempt in range(50):
            if self._mark(0.2) is not None:
                return
        raise AssertionError("the Redis monitor reported nothing")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(WAIT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)

    @contextmanager
    def window(self) -> Iterator[Window]:
        """The commands of the installation run inside the ``with`` block."""
        window = Window()
        begin = self._mark_seen()
        yield window
        end = self._mark_seen()
        with self._lock:
            window.commands = self._seen[begin + 1 : end]
        window.commands = [c for c in window.commands if not c.startswith("ECHO ")]

    def _mark_seen(self) -> int:
        place = self._mark(WAIT_S)
        if place is None and self._task is not None and self._task.done():
            self._task.result()  # the monitor's own failure, to say why
        if place is None:
            raise AssertionError("the Redis monitor did not report the marker")
        return place

    def _mark(self, wait_s: float) -> int | None:
        """Sends a marker and waits until the monitor reported it: its place in ``_seen``, or
        None when it was not reported within ``wait_s``."""
        name = f"{self._prefix}:mark:{secrets.token_hex(4)}"
        seen = threading.Event()
        with self._lock:
            self._marks[name] = seen
        asyncio.run_coroutine_threadsafe(self._echo(name), self._loop).result(WAIT_S)
        if not seen.wait(wait_s):
            return None
        with self._lock:
            return self._seen.index(f"ECHO {name}")

    async def _echo(self, name: str) -> None:
        assert self._client is not None
        await self._client.echo(name)

    async def _monitor(self) -> None:
        # The lines are read raw: redis-py's own parsing of them fails on some values.
        async with new_client().monitor() as monitor:
            assert monitor.connection is not None
            while True:
                line = await monitor.connection.read_response()
                assert isinstance(line, bytes)
                command = _command(line.decode("utf-8", "replace"), self._prefix)
                if command is None:
                    continue
                with self._lock:
                    self._seen.append(command)
                    for name, event in self._marks.items():
                        if command == f"ECHO {name}":
                            event.set()


_QUOTE = '"'
_LINE = re.compile(r"^[\d.]+ \[\d+ (?P<client>[^\]]*)\] (?P<command>.*)$")


def _command(line: str, prefix: str) -> str | None:
    """``NAME arg…`` of a MONITOR line naming ``prefix`` sent by a client (not a script)."""
    found = _LINE.match(line)
    if found is None or found["client"] == "lua" or prefix not in found["command"]:
        return None
    name, _space, args = found["command"].partition(" ")
    return f"{name.strip(_QUOTE).upper()} {args.strip(_QUOTE)}"


@contextmanager
def counting_commands(prefix: str) -> Iterator[RedisCommandCounter]:
    counter = RedisCommandCounter(prefix)
    counter.start()
    try:
        yield counter
    finally:
        counter.stop()
