"""Clients that trickle their bytes are cut off (issue 12, "Denial of service"): headers late
past TESSERA_HEADER_TIMEOUT_SECONDS and bodies late past TESSERA_BODY_TIMEOUT_SECONDS get 408
and a closed connection, idle keep-alive connections close after TESSERA_KEEP_ALIVE_SECONDS.
Driven with raw sockets, as a slowloris client would."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.support.server import RunningServer, running_server

HEADER_S = 1.0
BODY_S = 1.0
KEEP_ALIVE_S = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "TESSERA_HEADER_TIMEOUT_SECONDS": str(HEADER_S),
        "TESSERA_BODY_TIMEOUT_SECONDS": str(BODY_S),
        "TESSERA_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE_S),
    }
    with running_server(tmp_path_factory.mktemp("slow") / "data", env) as running:
        yield running


class RawClient:
    """One raw TCP connection to the server, and every byte it answered."""

    def __init__(self, server: RunningServer) -> None:
        address = urlsplit(server.base_url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=10)
        self.answer = b""

    def trickle(self, data: bytes, every_s: float, for_s: float) -> float:
        """Send ``data`` a byte at a time until the server closes the connection (or ``for_s``
        passes); the seconds it took the server to close it."""
        started = time.monotonic()
        for byte in data:
            if time.monotonic() - started > for_s:
                break
            try:
                self.sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            time.sleep(every_s)
            if self.closed():
                return time.monotonic() - started
        return time.monotonic() - started if self.closed(wait_s=0.5) else float("inf")

    def closed(self, wait_s: float = 0.0) -> bool:
        """Whether the server closed the connection (within ``wait_s``); reads what it sent."""
        self.sock.settimeout(wait_s or 0.001)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.answer += chunk
        except (TimeoutError, BlockingIOError):
            return False
        except ConnectionResetError:
            return True


def test_late_headers_get_408_and_the_connection_closed(server: RunningServer) -> None:
    client = RawClient(server)
    request = b"POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" * 50
    took = client.trickle(request, every_s=0.05, for_s=6.0)
    assert took < HEADER_S + 1.0, took
    assert client.answer.startswith(b"HTTP/1.1 408"), client.answer[:200]


def test_a_silent_connection_is_closed(server: RunningServer) -> None:
    client = RawClient(server)
    started = time.monotonic()
    assert client.closed(wait_s=HEADER_S + 2.0)
    assert time.monotonic() - started < HEADER_S + 1.0


@pytest.mark.parametrize("path", ["/track", "/event-source"])
def test_a_late_body_gets_408_and_the_connection_closed(server: RunningServer, path: str) -> None:
    client = RawClient(server)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    client.sock.sendall(head)
    took = client.trickle(b"{" + b" " * 999, every_s=0.05, for_s=6.0)
    assert took < BODY_S + 1.0, took
    assert client.answer.startswith(b"HTTP/1.1 408"), client.answer[:200]
    assert b"TESSERA_BODY_TIMEOUT_SECONDS" in client.answer


def test_prompt_clients_are_served_and_idle_ones_closed(server: RunningServer) -> None:
    client = RawClient(server)
    client.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    assert not client.closed()
    assert client.answer.startswith(b"HTTP/1.1 200"), client.answer[:200]
    started = time.monotonic()
    assert client.closed(wait_s=KEEP_ALIVE_S + 2.0)
    assert time.monotonic() - started < KEEP_ALIVE_S + 1.0
