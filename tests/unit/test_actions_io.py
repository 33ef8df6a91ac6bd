"""The actions that reach outside (HTTP calls, e-mail, Slack) and the memory actions, each run
against the real thing: a local HTTP server, a local SMTP server, SQLite."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import tessera.storage.sql.memory  # noqa: F401  (defines the kv_memory table)
from tessera.errors import InvalidPayload
from tessera.workflow.action import ActionContext, ActionError, ActionServices, Output
from tessera.workflow.actions.email import SendEmail
from tessera.workflow.actions.http import HttpCall
from tessera.workflow.actions.memory import MemoryDelete, MemoryRead, MemoryWrite
from tessera.workflow.actions.slack import SendSlackMessage
from tessera.workflow.registry import ActionRegistry
from tests.support.outside import Reply, recording_http_server, smtp_server
from tests.support.server import free_port

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SECRET = "s3cret-Token-42"

MakeContext = Callable[..., ActionContext]


@pytest.fixture
def make_context(services: ActionServices) -> MakeContext:
    def make(
        *, tenant: str = "acme", now: datetime = NOW, profile: dict[str, Any] | None = None
    ) -> ActionContext:
        return ActionContext(
            tenant=tenant,
            event={"id": "ev-1", "type": "purchase", "properties": {"sku": "A-1", "price": 12.5}},
            profile=profile
            if profile is not None
            else {
                "id": "p-1",
                "traits": {"name": "Ann"},
                "data": {"contact": {"email": {"main": "ann@example.com"}}},
            },
            session={"id": "s-1", "properties": {}, "context": {}},
            now=now,
            services=services,
        )

    return make


def single(result: Any) -> Output:
    assert isinstance(result, Output)
    return result


def leaked(secret: str, *things: Any) -> bool:
    return any(secret in json.dumps(thing, default=str) for thing in things)


# --- http_call --------------------------------------------------------------------------------


async def test_http_call_sends_rendered_request_and_answers_the_response(
    make_context: MakeContext,
) -> None:
    context = make_context()
    with recording_http_server(Reply(201, {"id": 7}, {"X-Request": "r1"})) as server:
        action = HttpCall.build(
            {
                "url": server.url("/users/{{ profile.id }}?source={{ event.type }}"),
                "method": "PUT",
                "headers": {"X-Sku": "{{ event.properties.sku }}"},
                "body": {"price": "{{ event.properties.price }}", "seen": "{{ payload.seen }}"},
            }
        )
        output = single(await action.run({"seen": True}, context))
        (request,) = server.requests
    assert output.port == "response"
    assert output.payload["status"] == 201
    assert output.payload["body"] == {"id": 7}
    assert output.payload["headers"]["x-request"] == "r1"
    assert request.method == "PUT"
    assert request.path == "/users/p-1?source=purchase"
    assert request.headers["x-sku"] == "A-1"
    assert request.headers["content-type"] == "application/json"
    # Whole-string templates keep the values' kinds.
    assert request.json() == {"price": 12.5, "seen": True}


async def test_http_call_get_has_no_body_and_reads_text(make_context: MakeContext) -> None:
    with recording_http_server(Reply(200, "plain words")) as server:
        action = HttpCall.build({"url": server.url("/ping"), "method": "GET"})
        output = single(await action.run({}, make_context()))
        (request,) = server.requests
    assert output.port == "response"
    assert output.payload["body"] == "plain words"
    assert request.method == "GET"
    assert request.body == b""


async def test_http_call_retries_server_errors_until_it_succeeds(
    make_context: MakeContext,
) -> None:
    with recording_http_server(500, 502) as server:
        action = HttpCall.build({"url": server.url("/hook"), "body": {"n": 1}, "retries": 2})
        output = single(await action.run({}, make_context()))
        requests = server.requests
    assert output.port == "response"
    assert len(requests) == 3
    assert all(request.json() == {"n": 1} for request in requests)


async def test_http_call_answers_error_once_retries_are_spent(make_context: MakeContext) -> None:
    with recording_http_server(default=Reply(503, {"busy": True})) as server:
        action = HttpCall.build({"url": server.url("/hook"), "retries": 2})
        output = single(await action.run({}, make_context()))
        count = len(server.requests)
    assert output.port == "error"
    assert output.payload["status"] == 503
    assert "503" in output.payload["error"]
    assert output.payload["body"] == {"busy": True}
    assert count == 3


async def test_http_call_does_not_retry_a_client_error(make_context: MakeContext) -> None:
    with recording_http_server(Reply(404, {"detail": "no such user"})) as server:
        action = HttpCall.build({"url": server.url("/users/x"), "retries": 3})
        output = single(await action.run({}, make_context()))
        count = len(server.requests)
    assert output.port == "error"
    assert output.payload["status"] == 404
    assert output.payload["body"] == {"detail": "no such user"}
    assert count == 1


async def test_http_call_reports_a_refused_connection(make_context: MakeContext) -> None:
    action = HttpCall.build({"url": f"http://127.0.0.1:{free_port()}/x", "retries": 1})
    output = single(await action.run({}, make_context()))
    assert output.port == "error"
    assert output.payload["status"] is None
    assert "connect" in output.payload["error"]


async def test_http_call_times_out_and_retries(make_context: MakeContext) -> None:
    with recording_http_server(default=Reply(200, {}, delay_s=2.0)) as server:
        action = HttpCall.build({"url": server.url("/slow"), "timeout_s": 0.2, "retries": 1})
        output = single(await action.run({}, make_context()))
        count = len(server.requests)
    assert output.port == "error"
    assert "no answer within 0.2 s" in output.payload["error"]
    assert count == 2


async def test_http_call_keeps_secrets_out_of_payloads_and_messages(
    make_context: MakeContext,
) -> None:
    context = make_context()
    with recording_http_server(default=Reply(500, "down")) as server:
        action = HttpCall.build(
            {
                "url": server.url(f"/hook?token={SECRET}"),
                "headers": {"Authorization": f"Bearer {SECRET}", "X-Plain": "visible"},
                "secret_headers": ["authorization"],
                "retries": 0,
            }
        )
        output = single(await action.run({}, context))
        (request,) = server.requests
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert output.port == "error"
    assert "/hook" in output.payload["error"]
    assert not leaked(SECRET, output.payload, context.effects.logs)


async def test_http_call_secret_header_template_failure_does_not_quote_it(
    make_context: MakeContext,
) -> None:
    action = HttpCall.build(
        {
            "url": "https://api.example.com/x",
            "headers": {"X-Key": SECRET + "{{ event.properties.price + 'x' }}"},
            "secret_headers": ["X-Key"],
        }
    )
    with pytest.raises(ActionError) as caught:
        await action.run({}, make_context())
    assert "X-Key" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ({"url": "ftp://files.example.com/a"}, "http"),
        ({"url": "{{ event.properties.url }}"}, "http"),
        ({"url": "https://"}, "host"),
        ({"url": "https://x.example/{{ nope.x }}"}, "unknown name"),
        ({"url": "https://x.example", "method": "TRACE"}, "method"),
        ({"url": "https://x.example", "timeout_s": 61}, "timeout_s"),
        ({"url": "https://x.example", "retries": 6}, "retries"),
        ({"url": "https://x.example", "secret_headers": ["Authorization"]}, "secret_headers"),
        ({"url": "https://x.example", "headers": {"Bad Name": "x"}}, "header name"),
        ({"url": "https://x.example", "body": {"a": ["{% if x %}"]}}, "body.a[0]"),
        ({"url": "https://x.example", "extra": 1}, "extra"),
    ],
)
def test_http_call_refuses_bad_configs(config: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        HttpCall.build(config)
    assert complaint in caught.value.message


# --- send_email -------------------------------------------------------------------------------


EMAIL = {
    "smtp_host": "127.0.0.1",
    "security": "none",
    "sender": "Shop <news@shop.example>",
    "to": "{{ profile.data.contact.email.main }}",
    "subject": "Thanks for {{ event.properties.sku }}, {{ profile.traits.name }}",
    "body": "Hello {{ profile.traits.name }}, you paid {{ event.properties.price }}.",
}


async def test_send_email_delivers_the_rendered_message(make_context: MakeContext) -> None:
    with smtp_server() as smtp:
        action = SendEmail.build(
            {**EMAIL, "smtp_port": smtp.port, "html": "<p>Hi {{ profile.traits.name }}</p>"}
        )
        output = single(await action.run({"step": 1}, make_context()))
        (received,) = smtp.messages
    assert output.port == "payload"
    assert output.payload["step"] == 1
    assert output.payload["email"]["to"] == ["ann@example.com"]
    message = received.message
    assert output.payload["email"]["message_id"] == message["Message-ID"]
    assert received.mail_from == "news@shop.example"
    assert received.rcpt_tos == ["ann@example.com"]
    assert message["From"] == "Shop <news@shop.example>"
    assert message["To"] == "ann@example.com"
    assert message["Subject"] == "Thanks for A-1, Ann"
    assert message["Message-ID"].endswith("@shop.example>")
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "Hello Ann, you paid 12.5."
    assert html.get_content().strip() == "<p>Hi Ann</p>"


async def test_send_email_logs_in_with_the_password(make_context: MakeContext) -> None:
    with smtp_server(credentials={"mailer": SECRET}) as smtp:
        action = SendEmail.build(
            {**EMAIL, "smtp_port": smtp.port, "username": "mailer", "password": SECRET}
        )
        output = single(await action.run({}, make_context()))
        (received,) = smtp.messages
    assert output.port == "payload"
    assert received.login == "mailer"
    assert not leaked(SECRET, output.payload)


async def test_send_email_wrong_password_answers_error_without_it(
    make_context: MakeContext,
) -> None:
    context = make_context()
    with smtp_server(credentials={"mailer": "right"}) as smtp:
        action = SendEmail.build(
            {**EMAIL, "smtp_port": smtp.port, "username": "mailer", "password": SECRET}
        )
        output = single(await action.run({}, context))
        assert smtp.messages == []
    assert output.port == "error"
    assert "Authentication" in output.payload["error"]
    assert output.payload["email"]["to"] == ["ann@example.com"]
    assert not leaked(SECRET, output.payload, context.effects.logs)


async def test_send_email_without_an_address_answers_error(make_context: MakeContext) -> None:
    context = make_context(profile={"id": "p-2", "traits": {}, "data": {}})
    with smtp_server() as smtp:
        action = SendEmail.build({**EMAIL, "smtp_port": smtp.port})
        output = single(await action.run({}, context))
        assert smtp.messages == []
    assert output.port == "error"
    assert "no recipient" in output.payload["error"]


async def test_send_email_sends_to_a_list_and_keeps_headers_one_line(
    make_context: MakeContext,
) -> None:
    context = make_context()
    context.event["properties"]["sku"] = "A-1\nBcc: victim@example.com"
    with smtp_server() as smtp:
        action = SendEmail.build(
            {**EMAIL, "smtp_port": smtp.port, "to": ["a@example.com", "B <b@example.com>"]}
        )
        output = single(await action.run({}, context))
        (received,) = smtp.messages
    assert output.payload["email"]["to"] == ["a@example.com", "b@example.com"]
    assert received.rcpt_tos == ["a@example.com", "b@example.com"]
    assert received.message["Bcc"] is None
    assert received.message["Subject"] == "Thanks for A-1 Bcc: victim@example.com, Ann"


async def test_send_email_reports_an_unreachable_server(make_context: MakeContext) -> None:
    action = SendEmail.build({**EMAIL, "smtp_port": free_port(), "timeout_s": 2})
    output = single(await action.run({}, make_context()))
    assert output.port == "error"
    assert f"127.0.0.1:{action.config.smtp_port}" in output.payload["error"]


def test_send_email_never_shows_the_password() -> None:
    action = SendEmail.build({**EMAIL, "username": "mailer", "password": SECRET})
    registry = ActionRegistry()
    registry.register(SendEmail)
    shown = [
        repr(action.config),
        str(action.config),
        action.config.model_dump_json(),
        json.dumps(registry.describe()),
    ]
    assert not any(SECRET in text for text in shown)
    schema = registry.describe()[0]["config_schema"]
    assert schema["properties"]["password"]["anyOf"][0]["writeOnly"] is True


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ({**EMAIL, "username": "mailer"}, "username and password"),
        ({**EMAIL, "sender": "not an address"}, "sender"),
        ({**EMAIL, "to": "{{ profile.x | nope }}"}, "to"),
        ({**EMAIL, "security": "ssl3"}, "security"),
        ({**EMAIL, "smtp_port": 0}, "smtp_port"),
        ({k: v for k, v in EMAIL.items() if k != "body"}, "body"),
    ],
)
def test_send_email_refuses_bad_configs(config: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        SendEmail.build(config)
    assert complaint in caught.value.message


# --- send_slack_message -----------------------------------------------------------------------


async def test_slack_posts_the_message_json(make_context: MakeContext) -> None:
    with recording_http_server(Reply(200, "ok")) as server:
        action = SendSlackMessage.build(
            {
                "webhook_url": server.url("/services/T1/B2/XYZ"),
                "text": "{{ profile.traits.name }} bought {{ event.properties.sku }}",
                "channel": "#sales",
                "username": "tessera",
            }
        )
        output = single(await action.run({"keep": "me"}, make_context()))
        (request,) = server.requests
    assert output == Output("payload", {"keep": "me"})
    assert request.method == "POST"
    assert request.path == "/services/T1/B2/XYZ"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {"text": "Ann bought A-1", "channel": "#sales", "username": "tessera"}


async def test_slack_retries_then_succeeds(make_context: MakeContext) -> None:
    with recording_http_server(500) as server:
        action = SendSlackMessage.build({"webhook_url": server.url("/hook"), "text": "hi"})
        output = single(await action.run({}, make_context()))
        count = len(server.requests)
    assert output.port == "payload"
    assert count == 2


async def test_slack_error_names_the_answer_not_the_webhook(make_context: MakeContext) -> None:
    context = make_context()
    with recording_http_server(Reply(404, "no_service")) as server:
        action = SendSlackMessage.build(
            {"webhook_url": server.url(f"/services/{SECRET}"), "text": "hi"}
        )
        output = single(await action.run({}, context))
    assert output.port == "error"
    assert output.payload == {"status": 404, "error": "the webhook answered 404: no_service"}
    assert not leaked(SECRET, output.payload, context.effects.logs)
    assert SECRET not in action.config.model_dump_json()
    assert SECRET not in repr(action.config)


async def test_slack_unreachable_webhook(make_context: MakeContext) -> None:
    action = SendSlackMessage.build(
        {"webhook_url": f"http://127.0.0.1:{free_port()}/{SECRET}", "text": "hi", "retries": 0}
    )
    output = single(await action.run({}, make_context()))
    assert output.port == "error"
    assert output.payload["status"] is None
    assert SECRET not in output.payload["error"]


@pytest.mark.parametrize(
    "config",
    [
        {"webhook_url": "ftp://hooks.example/x", "text": "hi"},
        {"webhook_url": "https://hooks.example/x", "text": ""},
        {"webhook_url": "https://hooks.example/x", "text": "{{ secret.x }}"},
        {"text": "hi"},
    ],
)
def test_slack_refuses_bad_configs(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        SendSlackMessage.build(config)


# --- memory -----------------------------------------------------------------------------------


async def test_memory_write_then_read(make_context: MakeContext) -> None:
    context = make_context()
    write = MemoryWrite.build(
        {"key": "last:{{ profile.id }}", "value": {"sku": "{{ event.properties.sku }}", "n": 2}}
    )
    assert single(await write.run({"a": 1}, context)) == Output("payload", {"a": 1})
    read = MemoryRead.build({"key": "last:{{ profile.id }}"})
    output = single(await read.run({"a": 1}, context))
    assert output == Output("found", {"a": 1, "memory": {"sku": "A-1", "n": 2}})


async def test_memory_write_from_a_path_and_read_into_the_profile(
    make_context: MakeContext,
) -> None:
    context = make_context()
    write = MemoryWrite.build({"key": "price", "from_path": "event@properties.price"})
    await write.run({}, context)
    read = MemoryRead.build({"key": "price", "target": "profile@traits.last_price"})
    output = single(await read.run({}, context))
    assert output.port == "found"
    assert context.profile is not None
    assert context.profile["traits"]["last_price"] == 12.5
    assert context.profile_changed


async def test_memory_read_missing_key(make_context: MakeContext) -> None:
    read = MemoryRead.build({"key": "never-written"})
    assert single(await read.run({"a": 1}, make_context())) == Output("missing", {"a": 1})


async def test_memory_value_expires_after_its_ttl(make_context: MakeContext) -> None:
    write = MemoryWrite.build({"key": "flag", "value": True, "ttl_s": 60})
    await write.run({}, make_context())
    read = MemoryRead.build({"key": "flag"})
    later = single(await read.run({}, make_context(now=NOW + timedelta(seconds=59))))
    expired = single(await read.run({}, make_context(now=NOW + timedelta(seconds=60))))
    assert later.port == "found"
    assert expired.port == "missing"


async def test_memory_delete_and_writing_nothing_forget(make_context: MakeContext) -> None:
    context = make_context()
    read = MemoryRead.build({"key": "k"})
    await MemoryWrite.build({"key": "k", "value": "v"}).run({}, context)
    await MemoryDelete.build({"key": "k"}).run({}, context)
    assert single(await read.run({}, context)).port == "missing"

    await MemoryWrite.build({"key": "k", "value": "v"}).run({}, context)
    await MemoryWrite.build({"key": "k", "from_path": "payload@absent"}).run({}, context)
    assert single(await read.run({}, context)).port == "missing"


async def test_memory_is_kept_per_tenant(make_context: MakeContext) -> None:
    await MemoryWrite.build({"key": "k", "value": 1}).run({}, make_context(tenant="acme"))
    read = MemoryRead.build({"key": "k"})
    assert single(await read.run({}, make_context(tenant="other"))).port == "missing"
    assert single(await read.run({}, make_context(tenant="acme"))).port == "found"


async def test_memory_key_that_renders_empty_stops_the_run(make_context: MakeContext) -> None:
    read = MemoryRead.build({"key": "{{ profile.traits.missing }}"})
    with pytest.raises(ActionError, match="rendered empty"):
        await read.run({}, make_context())


@pytest.mark.parametrize(
    ("action", "config"),
    [
        (MemoryWrite, {"key": "k"}),
        (MemoryWrite, {"key": "k", "value": 1, "from_path": "payload@x"}),
        (MemoryWrite, {"key": "k", "value": 1, "ttl_s": 0}),
        (MemoryWrite, {"key": "k", "from_path": "nowhere.x"}),
        (MemoryWrite, {"key": "{{ bad.x }}", "value": 1}),
        (MemoryRead, {"key": "k", "target": "event@properties.x"}),
        (MemoryRead, {"key": ""}),
        (MemoryDelete, {"key": "k", "ttl_s": 1}),
    ],
)
def test_memory_actions_refuse_bad_configs(action: Any, config: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        action.build(config)
