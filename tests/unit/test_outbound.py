"""The request-forgery policy of calls to other systems, against real connections: the local
HTTP and SMTP stand-ins of tests/support/outside.py, with production-like settings where
loopback is refused, and with the development ones where it is allowed."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tessera.errors import ConfigurationError
from tessera.outbound.network import outbound_client
from tessera.outbound.policy import IPAddress, OutboundPolicy, OutboundRefused
from tessera.outbound.resolver import Unresolvable, checked_addresses
from tessera.outbound.sockets import checked_socket
from tessera.settings import Settings, env_name, load_settings
from tessera.workflow.action import ActionContext, ActionServices, Output
from tessera.workflow.actions.email import SendEmail
from tessera.workflow.actions.http import HttpCall, HttpCallConfig
from tessera.workflow.actions.slack import SendSlackMessage
from tests.support.outside import Reply, recording_http_server, smtp_server

PRODUCTION = {"TESSERA_ENV": "production", "INSTALLATION_TOKEN": "a-long-installation-secret"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)


def production(**more: str) -> OutboundPolicy:
    return OutboundPolicy.from_settings(load_settings(**PRODUCTION, **more))


def development(**more: str) -> OutboundPolicy:
    return OutboundPolicy.from_settings(load_settings(**more))


@pytest.fixture
async def prod_client() -> AsyncIterator[httpx.AsyncClient]:
    async with outbound_client(production(), timeout_s=5) as client:
        yield client


# --- Which addresses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd12:3456::1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "not publicly routed"),  # connecting to it reaches this machine
        ("224.0.0.1", "not publicly routed"),
        ("255.255.255.255", "not publicly routed"),
        # IPv6 addresses that carry an IPv4 one are judged as that one.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_production_refuses_what_is_not_public_and_says_how_to_allow_it(
    address: str, kind: str
) -> None:
    reason = production().refusal(ipaddress.ip_address(address))
    assert reason is not None and kind in reason
    assert "TESSERA_OUTBOUND_ALLOW_CIDRS" in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert production().refusal(ipaddress.ip_address(address)) is None


def test_each_kind_is_allowed_by_its_setting() -> None:
    def allowed(policy: OutboundPolicy, address: str) -> bool:
        return policy.refusal(ipaddress.ip_address(address)) is None

    assert allowed(development(), "127.0.0.1") and not allowed(production(), "127.0.0.1")
    assert allowed(production(TESSERA_OUTBOUND_ALLOW_LOOPBACK="yes"), "::1")
    assert not allowed(development(TESSERA_OUTBOUND_ALLOW_LOOPBACK="no"), "127.0.0.1")
    assert not allowed(development(), "10.1.2.3")
    assert allowed(development(TESSERA_OUTBOUND_ALLOW_PRIVATE="yes"), "10.1.2.3")
    # Link-local never comes with "private": only a network named on purpose.
    assert not allowed(development(TESSERA_OUTBOUND_ALLOW_PRIVATE="yes"), "169.254.169.254")
    narrow = production(TESSERA_OUTBOUND_ALLOW_CIDRS="10.20.0.0/16, 169.254.10.0/24")
    assert allowed(narrow, "10.20.3.4") and allowed(narrow, "169.254.10.1")
    assert not allowed(narrow, "10.21.0.1") and not allowed(narrow, "169.254.169.254")


def test_a_bad_network_stops_start_up_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="TESSERA_OUTBOUND_ALLOW_CIDRS"):
        load_settings(TESSERA_OUTBOUND_ALLOW_CIDRS="10.0.0.0/8,intranet")


# --- HTTP: every connection is checked where it is made ----------------------------------------


async def test_development_reaches_the_local_server() -> None:
    with recording_http_server() as server:
        async with outbound_client(development(), timeout_s=5) as client:
            answer = await client.post(server.url("/hook"), json={"a": 1})
        assert answer.status_code == 200
        assert len(server.requests) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_production_refuses_loopback_by_address_or_by_name(
    prod_client: httpx.AsyncClient, host: str
) -> None:
    with recording_http_server() as server:
        port = server.base_url.rsplit(":", 1)[1]
        with pytest.raises(OutboundRefused, match="loopback") as refused:
            await prod_client.post(f"http://{host}:{port}/hook", json={"a": 1})
        assert server.requests == []
    if host == "localhost":
        assert "localhost resolves to" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/iam", "link-local"),
        ("http://10.0.0.1:8080/admin", "private"),
        ("https://[fd00::5]/", "private"),
        ("http://0.0.0.0:9200/", "not publicly routed"),
    ],
)
async def test_link_local_and_private_addresses_are_refused_before_connecting(
    prod_client: httpx.AsyncClient, url: str, kind: str
) -> None:
    with pytest.raises(OutboundRefused, match=kind):
        await prod_client.get(url)


async def test_a_redirect_to_loopback_is_refused() -> None:
    # The first server is on 127.0.0.2, allowed on purpose; it sends the client to another
    # loopback address, which production refuses.
    policy = production(TESSERA_OUTBOUND_ALLOW_CIDRS="127.0.0.2/32")
    with recording_http_server() as target:
        port = target.base_url.rsplit(":", 1)[1]
        moved = Reply(302, b"", {"Location": f"http://localhost:{port}/internal"})
        with recording_http_server(moved, host="127.0.0.2") as first:
            async with outbound_client(policy, timeout_s=5) as client:
                with pytest.raises(OutboundRefused, match="loopback"):
                    await client.get(first.url("/start"), follow_redirects=True)
            assert len(first.requests) == 1
        assert target.requests == []


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    async def internal_dns(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("10.1.2.3")] if host == "crm.internal.test" else []

    async with outbound_client(development(), timeout_s=5, resolver=internal_dns) as client:
        with pytest.raises(OutboundRefused, match=r"crm\.internal\.test resolves to 10\.1\.2\.3"):
            await client.get("http://crm.internal.test/hook")


async def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected() -> None:
    """DNS rebinding: a second answer (private) would come too late to matter."""
    answers = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.9.9.9")]
    asked: list[str] = []

    async def rebinding_dns(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [answers[min(len(asked) - 1, 1)]]

    with recording_http_server() as server:
        port = server.base_url.rsplit(":", 1)[1]
        async with outbound_client(development(), timeout_s=5, resolver=rebinding_dns) as c:
            answer = await c.get(f"http://shop.test:{port}/page")
        assert answer.status_code == 200
        [request] = server.requests
    assert asked == ["shop.test"]
    assert request.headers["host"] == f"shop.test:{port}"  # the URL's host, not the address


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext",
            f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert


def _tls_server(folder: Path, name: str) -> tuple[ssl.SSLContext, list[str | None], Path]:
    """A server context with a certificate for ``name`` only, the server names (SNI) clients
    asked it for, and the certificate (to trust it)."""
    key, cert = _certificate(folder, name)
    seen: list[str | None] = []
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    server_side.sni_callback = lambda _socket, asked, _context: seen.append(asked)
    return server_side, seen, cert


async def test_tls_gets_the_host_name_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    server_side, seen, cert = _tls_server(tmp_path, "shop.test")
    trusting = ssl.create_default_context(cafile=str(cert))

    async def to_loopback(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]

    with recording_http_server(tls=server_side) as server:
        port = server.base_url.rsplit(":", 1)[1]
        async with outbound_client(
            development(), timeout_s=5, resolver=to_loopback, ssl_context=trusting
        ) as client:
            # The certificate is for shop.test only: checking it against 127.0.0.1 would fail.
            answer = await client.get(f"https://shop.test:{port}/secure")
        assert answer.status_code == 200
    assert seen == ["shop.test"]


async def test_an_unknown_name_is_a_connection_error_not_a_refusal() -> None:
    with pytest.raises(Unresolvable):
        await checked_addresses("no-such-host.invalid", 80, development(), timeout_s=5)
    async with outbound_client(development(), timeout_s=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://no-such-host.invalid/")


# --- The actions and the delivery worker --------------------------------------------------------


def _context(services: ActionServices) -> ActionContext:
    return ActionContext(
        tenant="acme",
        event={"id": "ev-1", "type": "purchase", "properties": {"host": "evil.example.net"}},
        profile={"id": "p-1", "data": {"contact": {"email": {"main": "ann@example.com"}}}},
        session={"id": "s-1", "properties": {}, "context": {}},
        now=datetime(2024, 5, 1, tzinfo=UTC),
        services=services,
    )


@pytest.fixture
async def prod_services(services: ActionServices) -> AsyncIterator[ActionServices]:
    policy = production()
    async with outbound_client(policy, timeout_s=5) as client:
        yield ActionServices(http=client, memory=services.memory, outbound=policy)


async def test_http_call_refused_by_the_policy_answers_error_at_once(
    prod_services: ActionServices,
) -> None:
    with recording_http_server() as server:
        action = HttpCall.build({"url": server.url("/crm"), "retries": 3})
        output = await action.run({}, _context(prod_services))
        assert server.requests == []
    assert isinstance(output, Output) and output.port == "error"
    assert "refused by the outbound policy" in output.payload["error"]


@pytest.mark.parametrize(
    "url",
    [
        "https://{{ event.properties.host }}/collect",
        "https://api.example.com{{ event.properties.host }}/x",
        "https://api.example.com:{{ event.properties.port }}/x",
        "{{ event.properties.url }}",
        "https://user:pass@api.example.com/x",
    ],
)
def test_http_call_refuses_a_host_that_a_template_could_choose(url: str) -> None:
    with pytest.raises(Exception, match="url") as refused:
        HttpCall.build({"url": url})
    assert type(refused.value).__name__ == "InvalidPayload"


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/users/{{ profile.id }}",
        "https://api.example.com?email={{ profile.data.contact.email.main }}",
        "https://api.example.com:8443/{{ event.type }}#{{ event.id }}",
    ],
)
def test_http_call_takes_templates_in_the_path_and_the_query(url: str) -> None:
    HttpCall.build({"url": url})


async def test_http_call_stored_before_the_rule_is_refused_at_call_time(
    services: ActionServices,
) -> None:
    # As stored by an earlier version: the model accepts it, the save-time check is skipped.
    config = HttpCallConfig.model_validate({"url": "http://{{ event.properties.host }}/x"})
    output = await HttpCall(config).run({}, _context(services))
    assert isinstance(output, Output) and output.port == "error"
    assert "a template may not choose it" in output.payload["error"]


async def test_send_email_to_a_refused_server_sends_nothing(
    prod_services: ActionServices,
) -> None:
    with smtp_server() as smtp:
        action = SendEmail.build(
            {
                "smtp_host": smtp.host,
                "smtp_port": smtp.port,
                "security": "none",
                "sender": "shop@example.com",
                "to": "{{ profile.data.contact.email.main }}",
                "subject": "Hi",
                "body": "Hello",
            }
        )
        output = await action.run({}, _context(prod_services))
        assert smtp.messages == []
    assert isinstance(output, Output) and output.port == "error"
    assert "refused by the outbound policy" in output.payload["error"]
    assert "loopback" in output.payload["error"]


async def test_send_email_by_name_keeps_the_name_for_starttls(
    tmp_path: Path, services: ActionServices
) -> None:
    server_side, seen, _cert = _tls_server(tmp_path, "localhost")
    with smtp_server(starttls=server_side) as smtp:
        action = SendEmail.build(
            {
                "smtp_host": "localhost",
                "smtp_port": smtp.port,
                "security": "starttls",
                "verify_certificate": False,  # self-signed; the name still goes in the SNI
                "sender": "shop@example.com",
                "to": "{{ profile.data.contact.email.main }}",
                "subject": "Hi",
                "body": "Hello",
            }
        )
        output = await action.run({}, _context(services))
        assert isinstance(output, Output) and output.port == "payload", output
        assert len(smtp.messages) == 1
    assert seen == ["localhost"]


async def test_the_smtp_socket_is_connected_to_the_checked_address() -> None:
    with smtp_server() as smtp:
        connection = await checked_socket(smtp.host, smtp.port, development(), timeout_s=5)
        try:
            assert connection.getpeername()[:2] == (smtp.host, smtp.port)
        finally:
            connection.close()
        with pytest.raises(OutboundRefused):
            await checked_socket("localhost", smtp.port, production(), timeout_s=5)


async def test_slack_to_a_refused_webhook_sends_nothing(prod_services: ActionServices) -> None:
    with recording_http_server() as server:
        action = SendSlackMessage.build({"webhook_url": server.url("/services/x"), "text": "hi"})
        output = await action.run({}, _context(prod_services))
        assert server.requests == []
    assert isinstance(output, Output) and output.port == "error"


@pytest.mark.parametrize("name", ["Host", "content-length"])
def test_http_call_may_not_set_the_host_header(name: str) -> None:
    with pytest.raises(Exception, match=name) as refused:
        HttpCall.build(
            {"url": "https://api.example.com/x", "headers": {name: "{{ event.properties.h }}"}}
        )
    assert type(refused.value).__name__ == "InvalidPayload"
