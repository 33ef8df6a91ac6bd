"""A lean, pipelined Redis connection for the scripts of the request's hot path.

A ``/track`` request makes three Redis round trips, each a Lua script (``locks.py``), and
redis-py's asyncio client spends most of the CPU they cost in itself (its pool, retries,
timeouts, command packing, script objects): some 70-80 µs a command. This connection does
only what running a script needs, in about a quarter of that:

- Pipelining. Every caller shares a few connections (``CONNECTIONS``, taken in turn): a command
  is written as soon as it is asked for, and a future for its answer is queued behind those of
  the commands written before it. Redis answers the commands of a connection in the order it
  got them, so each answer parsed (``hiredis.Reader``) resolves the oldest future. No caller
  waits for a free connection, and no connection waits for an answer before the next command.
- Bounded waits. Connecting is bounded by ``TESSERA_REDIS_CONNECT_TIMEOUT_SECONDS``, each
  answer by ``TESSERA_REDIS_TIMEOUT_SECONDS`` from when its command was written (one timer
  per connection, for its oldest command). An answer that does not come in time breaks the
  connection for good. Answers are matched to commands by their order alone, so once one
  command is given up on, the rest of the stream can no longer be trusted to line up; and a
  server that left a command unanswered that long (gone, hung, or a half-open connection)
  would make every command queued behind it wait out its own timeout too. So every command
  still waiting on it fails at once, the connection is closed, and the next command opens a
  new one. A connection that is reset or closed fails its commands the same way. Nothing is
  sent again (as ``client.py`` says, a lock script run twice would find its own lock busy).
- A cancelled caller leaves its future in the queue: the future is cancelled, and its answer,
  when it comes, is read and dropped, so the answers behind it still reach their callers.
- The errors are redis-py's, classed by redis-py's own parser, so ``outage.py`` tells an
  outage from a bug as it does for redis-py's client: ``ConnectionError`` (including
  ``AuthenticationError``) and ``TimeoutError`` for the connection, ``ReadOnlyError``,
  ``OutOfMemoryError``, ``NoScriptError`` … ``ResponseError`` for an error answer.
- Answers are as redis-py's with ``decode_responses=False``: bytes, ints, nested lists, None
  for nil (a script's ``false`` is nil).

Scripts run by their SHA1 (``EVALSHA``); a server that does not know one (restarted, or its
scripts flushed) answers ``NOSCRIPT`` without running it, so the script is loaded and run once
more. Everything else Tessera sends to Redis goes through redis-py (``client.py``).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import hiredis
from redis import exceptions as redis_errors
from redis._parsers.base import BaseParser

from tessera.settings import Settings, secret_value

# What a command is made of (what hiredis can pack).
Arg = str | bytes | int | float

# Redis's main thread answers every connection in turn, so more connections buy nothing but
# the other's survival when one breaks; two keep half the commands in flight going then.
CONNECTIONS: Final = 2
# How long closing waits for its connections to be let go of.
CLOSE_WAIT_S: Final = 1.0

# hiredis's stub types the command as a tuple of one item; any number is packed.
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)
# What ``hiredis.Reader.gets`` answers while a whole answer has not arrived yet (RESP2's
# answers include no False, but a sentinel of our own leaves no doubt).
_MORE: Final = object()


class WireScript:
    """A Lua script, run by its SHA1 on a ``RedisWire``; called as redis-py's scripts are."""

    __slots__ = ("_sha", "_source", "_wire")

    def __init__(self, wire: RedisWire, source: str) -> None:
        self._wire = wire
        self._source = source.encode()
        self._sha = hashlib.sha1(self._source, usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[Arg] = ()) -> Any:
        command = ("EVALSHA", self._sha, len(keys), *keys, *args)
        try:
            return await self._wire.execute(*command)
        except redis_errors.NoScriptError:
            # The script did not run: loading it and running it again is safe.
            await self._wire.execute("SCRIPT", "LOAD", self._source)
            return await self._wire.execute(*command)


class RedisWire:
    """A few pipelined connections to one Redis server, opened on first use."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        password: str | None = None,
        db: int = 0,
        connect_timeout_s: float,
        timeout_s: float,
        connections: int = CONNECTIONS,
    ) -> None:
        if connections < 1:
            raise ValueError("a RedisWire needs at least one connection")
        self._host = host
        self._port = port
        self._where = f"{host}:{port}"
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        # Sent first on every new connection, without waiting: the commands behind them are
        # answered only once they were accepted (an error breaks the connection, see
        # ``_Connection.greet``).
        self._greeting: list[tuple[Arg, ...]] = []
        if password is not None:
            self._greeting.append(("AUTH", password))
        if db:
            self._greeting.append(("SELECT", db))
        self._slots = [_Slot() for _ in range(connections)]
        self._turn = 0
        self._closed = False

    def register_script(self, source: str) -> WireScript:
        return WireScript(self, source)

    async def execute(self, *args: Arg) -> Any:
        """Send one command and wait for its answer (an error answer is raised)."""
        slot = self._slots[self._turn]
        self._turn = (self._turn + 1) % len(self._slots)
        connection = slot.connection
        if connection is None or connection.broken:
            connection = await self._reopen(slot)
        return await connection.send(_pack(args))

    async def aclose(self) -> None:
        """Close every connection; commands still waiting fail, and later ones too."""
        self._closed = True
        # A connection being opened is waited for (its caller gets it, then the error below):
        # cancelling it would raise CancelledError in callers that were not cancelled.
        opening = [slot.opening for slot in self._slots if slot.opening is not None]
        if opening:
            await asyncio.wait(opening, timeout=self._connect_timeout_s + CLOSE_WAIT_S)
        lost: list[asyncio.Future[None]] = []
        for slot in self._slots:
            if slot.connection is not None:
                slot.connection.close(redis_errors.ConnectionError("the connection was closed"))
                lost.append(slot.connection.lost)
                slot.connection = None
        if lost:
            # Let go of the sockets before the event loop may end.
            await asyncio.wait(lost, timeout=CLOSE_WAIT_S)

    async def _reopen(self, slot: _Slot) -> _Connection:
        if self._closed:
            raise redis_errors.ConnectionError(
                f"the connection to Redis at {self._where} is closed"
            )
        # One connection attempt for every caller that finds the slot without one; a caller
        # cancelled meanwhile does not cancel it for the others.
        if slot.opening is None:
            opening = asyncio.get_running_loop().create_task(self._open())
            opening.add_done_callback(lambda done: self._opened(slot, done))
            slot.opening = opening
        return await asyncio.shield(slot.opening)

    def _opened(self, slot: _Slot, opening: asyncio.Task[_Connection]) -> None:
        slot.opening = None
        if not opening.cancelled() and opening.exception() is None:
            slot.connection = opening.result()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _transport, connection = await loop.create_connection(
                    lambda: _Connection(self._where, self._timeout_s), self._host, self._port
                )
        # (The built-in TimeoutError is an OSError: it comes first.)
        except TimeoutError as exc:
            raise redis_errors.TimeoutError(
                f"Timeout connecting to Redis at {self._where}"
            ) from exc
        except OSError as exc:
            raise redis_errors.ConnectionError(
                f"Error connecting to Redis at {self._where}: {exc}"
            ) from exc
        for command in self._greeting:
            connection.greet(_pack(command), str(command[0]))
        return connection


class _Slot:
    """One of a ``RedisWire``'s connections: the open one, or the attempt to open it."""

    __slots__ = ("connection", "opening")

    def __init__(self) -> None:
        self.connection: _Connection | None = None
        self.opening: asyncio.Task[_Connection] | None = None


# A command written and not answered yet: the future of its answer (None for the greeting),
# its deadline on the loop's clock, and its name for messages.
_Waiting = tuple[asyncio.Future[Any] | None, float, str]


class _Connection(asyncio.Protocol):
    """One TCP connection: commands written in turn, answers matched to them in order."""

    def __init__(self, where: str, timeout_s: float) -> None:
        self._where = where
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        # Error answers are made into redis-py's exceptions by redis-py's own parser.
        self._reader = hiredis.Reader(replyError=BaseParser.parse_error, notEnoughData=_MORE)
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[_Waiting] = deque()
        # Commands written this turn of the event loop, sent together at its end.
        self._unsent: list[bytes] = []
        # Armed for the oldest command's deadline while any is waiting (see ``_check_time``).
        self._timer: asyncio.TimerHandle | None = None
        # Set for good once the connection cannot be used any more, and why.
        self.broken = False
        self._error: Exception | None = None
        # Done once the transport let go of the socket.
        self.lost: asyncio.Future[None] = self._loop.create_future()

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Write a command; the future is its answer."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self._write(packed, (future, self._loop.time() + self._timeout_s, "a command"))
        return future

    def greet(self, packed: bytes, name: str) -> None:
        """Write a command of the connection's setup (AUTH, SELECT): nobody waits for its
        answer, but an error answer breaks the connection, and the commands written after it
        fail with that error (rather than with the NOAUTH or wrong database that follows)."""
        self._write(packed, (None, self._loop.time() + self._timeout_s, name))

    def _write(self, packed: bytes, waiting: _Waiting) -> None:
        transport = self._transport
        if self.broken or transport is None or transport.is_closing():
            # What broke it (a refused login, say: it may come before the first command).
            error = self._error or redis_errors.ConnectionError(
                f"the connection to Redis at {self._where} is closing"
            )
            raise copy.copy(error)
        self._waiting.append(waiting)
        # Written once per turn of the event loop, with every command of that turn: on
        # loopback a send() runs the receiving side's TCP work too, and the requests a turn
        # serves often have a command each.
        if not self._unsent:
            self._loop.call_soon(self._send_unsent)
        self._unsent.append(packed)
        if self._timer is None:
            self._timer = self._loop.call_at(waiting[1], self._check_time)

    def _send_unsent(self) -> None:
        unsent, self._unsent = self._unsent, []
        transport = self._transport
        if self.broken or transport is None or transport.is_closing():
            return  # their callers fail with the connection (close, connection_lost)
        transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.broken:
            return
        self._reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                answer = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(redis_errors.InvalidResponse(f"Redis sent what is not RESP: {exc}"))
                return
            if answer is _MORE:
                return
            if not waiting:
                self.close(redis_errors.InvalidResponse("Redis answered a command not sent"))
                return
            future, _deadline, name = waiting.popleft()
            if future is None:
                if isinstance(answer, Exception):
                    # A refused login or database: a clear error for every command behind it.
                    self.close(
                        type(answer)(
                            f"Redis at {self._where} refused {name} on connecting: {answer}"
                        )
                    )
                    return
            # A cancelled caller's answer is dropped.
            elif not future.done():
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc is not None else " (closed by the server)"
        self._fail(
            redis_errors.ConnectionError(f"Lost the connection to Redis at {self._where}{reason}")
        )
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self, error: Exception) -> None:
        """Break the connection for good: fail every waiting command with ``error``."""
        self._fail(error)
        if self._transport is not None:
            # Nothing still to be written matters any more: its answer would be dropped.
            self._transport.abort()

    def _fail(self, error: Exception) -> None:
        if not self.broken:
            self.broken = True
            self._error = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, deque()
        for future, _deadline, _name in waiting:
            if future is not None and not future.done():
                # A copy each: one exception raised in several tasks would collect all of
                # their tracebacks.
                future.set_exception(copy.copy(error))

    def _check_time(self) -> None:
        """The oldest command's deadline came: it failed when it is still waiting, else the
        timer is armed for the command now oldest. (One timer per connection, rearmed only
        when it fires, rather than one per command.)"""
        self._timer = None
        if not self._waiting:
            return
        _future, deadline, name = self._waiting[0]
        if self._loop.time() >= deadline:
            self.close(
                redis_errors.TimeoutError(
                    f"Redis at {self._where} did not answer {name} within {self._timeout_s:g} s"
                )
            )
        else:
            self._timer = self._loop.call_at(deadline, self._check_time)


def redis_wire(settings: Settings) -> RedisWire:
    """The lean connection for ``REDIS_HOST``, with ``redis_client``'s address, login and
    timeouts; it connects on first use."""
    if settings.redis_host is None:
        raise ValueError("REDIS_HOST is not set")
    return RedisWire(
        settings.redis_host,
        settings.redis_port,
        password=secret_value(settings.redis_password),
        db=settings.redis_db,
        connect_timeout_s=settings.redis_connect_timeout_seconds,
        timeout_s=settings.redis_timeout_seconds,
    )
