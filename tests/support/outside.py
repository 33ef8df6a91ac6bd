"""Real local stand-ins for the outside world: an HTTP server that records what it is sent and an
SMTP server that keeps what it receives.

Both listen on 127.0.0.1 on a free port and run in a background thread, so they serve sync and
async tests alike (an ``async def`` test uses the plain ``with`` form; the server does not share
the test's event loop).

    with recording_http_server(500, 500) as server:   # two failures, then the default reply
        ... POST to server.url("/hook") ...
        assert len(server.requests) == 3
        assert server.requests[-1].json() == {"text": "hi"}

    with smtp_server() as smtp:
        ... send to smtp.host:smtp.port ...
        assert smtp.messages[0].message["Subject"] == "Welcome"
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.server import free_port

# --- HTTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One answer of the recording server. A ``body`` that is not bytes or str is sent as JSON;
    ``delay_s`` holds the answer back (to make a client time out)."""

    status: int = 200
    body: Any = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            return self.body, headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode(), headers
        headers.setdefault("Content-Type", "application/json")
        return msgspec.json.encode(self.body), headers


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # with the query string, as sent
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


class RecordingServer:
    """What the handler threads share: the replies still planned and the requests seen."""

    def __init__(self, default: Reply) -> None:
        self.default = default
        self.base_url = ""
        self._planned: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def plan(self, *replies: Reply | int) -> None:
        """Answer the next requests with these replies (a bare int is a status with no body),
        in order; afterwards with ``default`` again."""
        with self._lock:
            self._planned.extend(Reply(r) if isinstance(r, int) else r for r in replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def _record(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            return self._planned.popleft() if self._planned else self.default


def _handler_class(server: RecordingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real services answer

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            reply = server._record(
                RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body,
                )
            )
            if reply.delay_s:
                time.sleep(reply.delay_s)
            content, headers = reply.encoded()
            try:
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test); nobody to answer

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


@contextmanager
def recording_http_server(
    *replies: Reply | int,
    default: Reply | None = None,
    host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
) -> Iterator[RecordingServer]:
    """A real HTTP server on ``host`` (127.0.0.1; any 127.x.y.z is this machine too): answers
    ``replies`` in order, then ``default`` (200 with ``{"ok": true}`` unless given), and
    records every request. With ``tls`` (a server context) it speaks HTTPS."""
    state = RecordingServer(default or Reply(200, {"ok": True}))
    state.plan(*replies)
    httpd = ThreadingHTTPServer((host, 0), _handler_class(state))
    httpd.daemon_threads = True
    httpd.block_on_close = False  # a delayed reply must not hold the test up at exit
    scheme = "http"
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    state.base_url = f"{scheme}://{host}:{httpd.server_address[1]}"
    # A short poll interval: shutdown() waits for the serving loop to look once more.
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.02},
        name="recording-http",
        daemon=True,
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --- SMTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None  # who authenticated, when the client did


class _Collector:
    def __init__(self) -> None:
        self.messages: list[ReceivedEmail] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        self.messages.append(
            ReceivedEmail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                message=parsed,
                login=login,
            )
        )
        return "250 Message accepted"


@dataclass
class SmtpServer:
    host: str
    port: int
    _collector: _Collector

    @property
    def messages(self) -> list[ReceivedEmail]:
        return list(self._collector.messages)


def _authenticator(credentials: Mapping[str, str]) -> Any:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and credentials.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        # handled=False: aiosmtpd itself answers 535 to a refused login.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate


@contextmanager
def smtp_server(
    credentials: Mapping[str, str] | None = None, *, starttls: ssl.SSLContext | None = None
) -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 keeping every message it accepts. With
    ``credentials`` (login → password) it offers AUTH over plain text (not requiring it: a
    message's ``login`` tells whether the client logged in). With ``starttls`` (a server
    context) it requires STARTTLS."""
    collector = _Collector()
    options: dict[str, Any] = {}
    if starttls is not None:
        options = {"tls_context": starttls, "require_starttls": True}
    if credentials is not None:
        options |= {
            "authenticator": _authenticator(credentials),
            "auth_require_tls": False,  # a local test server has no certificate
        }
    controller = Controller(collector, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield SmtpServer(host="127.0.0.1", port=controller.port, _collector=collector)
    finally:
        controller.stop()
