"""A TCP relay on loopback that a test can switch between behaviours, to cut a real service away.

    relay = TcpRelay("127.0.0.1", 9200)
    await relay.up()        # 127.0.0.1:relay.port reaches the service
    await relay.hang()      # the service falls silent: connections stay open (and new ones are
                            # accepted) but not a byte is forwarded either way
    await relay.reset()     # every open connection is reset (RST); new ones are accepted and
                            # reset at once
    await relay.down()      # open connections are closed, new ones refused (nothing listens)
    await relay.up()        # back: silent connections resume, new ones reach the service

The port is fixed when the relay is made, so a client keeps its URL across the switches.
``RelayThread`` runs one on its own event loop, for tests that are synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

Mode = Literal["up", "hang", "reset", "down"]
T = TypeVar("T")

CHUNK = 65536


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _abort_with_reset(writer: asyncio.StreamWriter) -> None:
    """Close at once with a TCP RST (linger 0) rather than an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and, once forwarding, its connection to the service."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.upstream: asyncio.StreamWriter | None = None

    def reset(self) -> None:
        _abort_with_reset(self.writer)
        if self.upstream is not None:
            self.upstream.transport.abort()

    def close(self) -> None:
        self.writer.close()
        if self.upstream is not None:
            self.upstream.close()


class TcpRelay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self.mode: Mode = "down"
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        # Set while bytes may flow; a silent relay's pipes wait on it.
        self._flowing = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        await self._listen()
        self.mode = "up"
        self._flowing.set()

    async def hang(self) -> None:
        await self._listen()
        self.mode = "hang"
        self._flowing.clear()

    async def reset(self) -> None:
        await self._listen()
        self.mode = "reset"
        self._flowing.set()
        for link in list(self._links):
            link.reset()
        self._links.clear()

    async def down(self) -> None:
        self.mode = "down"
        self._flowing.set()
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.close()
        self._links.clear()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _abort_with_reset(writer)
            return
        link = _Link(reader, writer)
        self._links.add(link)
        try:
            # A silent relay accepts and holds the connection; it reaches the service only
            # once the relay is up again (if the client is still there by then).
            await self._flowing.wait()
            if self.mode != "up" or link not in self._links:
                link.close()
                return
            try:
                upstream_reader, link.upstream = await asyncio.open_connection(*self._target)
            except OSError:
                link.close()
                return
            await asyncio.gather(
                self._pipe(reader, link.upstream), self._pipe(upstream_reader, writer)
            )
        finally:
            self._links.discard(link)
            link.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                # Silent: what was read is held (and nothing more is read) until the relay is
                # up again, so neither side hears anything meanwhile.
                await self._flowing.wait()
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()


class RelayThread:
    """A ``TcpRelay`` on its own event loop in a thread: for a synchronous test driving a
    server in another process."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.relay: TcpRelay = self.run(self._make(target_host, target_port))

    @staticmethod
    async def _make(host: str, port: int) -> TcpRelay:
        # Made on the relay's loop, so its Event belongs there.
        return TcpRelay(host, port)

    @property
    def port(self) -> int:
        return self.relay.port

    @property
    def url(self) -> str:
        return self.relay.url

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=30)

    def switch(self, mode: Mode) -> None:
        actions = {
            "up": self.relay.up,
            "hang": self.relay.hang,
            "reset": self.relay.reset,
            "down": self.relay.down,
        }
        self.run(actions[mode]())

    def close(self) -> None:
        self.run(self.relay.down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
