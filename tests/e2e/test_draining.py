"""A stopping `tessera serve` process serves a request that arrives on an idle keep-alive
connection instead of closing the connection under it (tessera/serving/draining.py): the case
a graceful restart meets on every connection a client keeps open."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.support.server import RunningServer, start_server

REQUEST = b"GET /health HTTP/1.1\r\nHost: tessera\r\n\r\n"
# A start on a machine busy with other tests can take longer than the usual 30 s.
START_S = 120.0


def read_answer(connection: socket.socket) -> bytes:
    """One whole answer (headers and its Content-Length of body); what came when it closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def stopped_listening(server: RunningServer, timeout_s: float = 30.0) -> bool:
    """True once new connections are refused: the process has begun to stop."""
    port = int(server.base_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        time.sleep(0.01)
    return False


def test_a_request_on_an_idle_connection_is_served_while_the_process_stops(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "data", start_timeout_s=START_S)
    try:
        port = int(server.base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(REQUEST)
            assert read_answer(connection).startswith(b"HTTP/1.1 200")
            # The connection is idle now, kept alive; the process is told to stop.
            server.process.send_signal(signal.SIGTERM)
            assert stopped_listening(server), server.log()
            connection.sendall(REQUEST)
            answer = read_answer(connection)
            assert answer.startswith(b"HTTP/1.1 200"), (answer, server.log())
            assert b"connection: close" in answer.lower()
            assert connection.recv(1) == b""  # and then closed by the server
        # Stopped, by the signal it was sent (uvicorn raises it again once it has shut down).
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM), server.log()
    finally:
        server.stop()
