"""A secret sent back as ``********`` keeps its stored value only while it goes where it went:
changing the URL (or the SMTP server, or how it is reached) needs the secret sent again."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tessera.errors import InvalidPayload
from tessera.security.kept_secrets import REDACTED, restore_url_password, url_shown
from tessera.workflow.actions.email import SendEmail
from tessera.workflow.actions.http import HttpCall
from tessera.workflow.actions.slack import SendSlackMessage

HTTP_STORED: dict[str, Any] = {
    "url": "https://crm.example.com/hooks/{{ profile.id }}",
    "headers": {"Authorization": "Bearer crm-secret", "X-Source": "tessera"},
    "secret_headers": ["Authorization"],
}
EMAIL_STORED: dict[str, Any] = {
    "smtp_host": "smtp.example.com",
    "username": "shop",
    "password": "smtp-secret",
    "sender": "shop@example.com",
    "to": "{{ profile.data.contact.email.main }}",
    "subject": "Hi",
    "body": "Hello",
}


def sent_back(stored: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The configuration as the API showed it, with the client's changes."""
    shown = copy.deepcopy(stored)
    if "headers" in shown:
        shown["headers"]["Authorization"] = REDACTED
    if "password" in shown:
        shown["password"] = REDACTED
    shown.update(changes)
    return shown


def test_http_call_keeps_the_secret_for_the_same_url() -> None:
    config = sent_back(HTTP_STORED, method="PUT")
    HttpCall.keep_secrets(config, HTTP_STORED)
    assert config["headers"]["Authorization"] == "Bearer crm-secret"


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example.net/hooks/{{ profile.id }}",
        "https://crm.example.com.attacker.example.net/",
        "http://crm.example.com/hooks/{{ profile.id }}",  # no more TLS
        "https://crm.example.com/other/{{ profile.id }}",
    ],
)
def test_http_call_with_a_new_url_needs_the_secret_again(url: str) -> None:
    config = sent_back(HTTP_STORED, url=url)
    with pytest.raises(InvalidPayload) as refused:
        HttpCall.keep_secrets(config, HTTP_STORED)
    assert "url changed" in refused.value.message
    assert "headers.Authorization" in refused.value.message
    assert "crm-secret" not in refused.value.message
    # Sent again, the new URL is fine.
    config["headers"]["Authorization"] = "Bearer new-secret"
    HttpCall.keep_secrets(config, HTTP_STORED)
    assert config["headers"]["Authorization"] == "Bearer new-secret"


def test_http_call_keeps_no_secret_for_a_header_that_is_no_longer_secret() -> None:
    # Kept, the value would be answered in clear from then on.
    config = sent_back(HTTP_STORED, secret_headers=[])
    with pytest.raises(InvalidPayload, match=r"headers\.Authorization"):
        HttpCall.keep_secrets(config, HTTP_STORED)


def test_http_call_keeps_no_public_value_as_a_secret() -> None:
    config = copy.deepcopy(HTTP_STORED)
    config["headers"]["X-Source"] = REDACTED
    config["secret_headers"] = ["Authorization", "X-Source"]
    config["headers"]["Authorization"] = REDACTED
    with pytest.raises(InvalidPayload, match=r"headers\.X-Source: there is no stored secret"):
        HttpCall.keep_secrets(config, HTTP_STORED)


def test_send_email_keeps_the_password_for_the_same_server() -> None:
    # 587 and starttls are the defaults the stored configuration left out.
    config = sent_back(EMAIL_STORED, smtp_port=587, security="starttls", subject="New")
    SendEmail.keep_secrets(config, EMAIL_STORED)
    assert config["password"] == "smtp-secret"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"smtp_host": "smtp.attacker.example.net"}, "smtp_host"),
        ({"smtp_port": 2525}, "smtp_port"),
        ({"security": "none"}, "security"),  # the password would cross the network in clear
        ({"verify_certificate": False}, "verify_certificate"),
    ],
)
def test_send_email_to_another_server_needs_the_password_again(
    change: dict[str, Any], named: str
) -> None:
    config = sent_back(EMAIL_STORED, **change)
    with pytest.raises(InvalidPayload) as refused:
        SendEmail.keep_secrets(config, EMAIL_STORED)
    assert f"{named} changed: send password again" in refused.value.message
    assert "smtp-secret" not in refused.value.message


def test_slack_keeps_its_webhook_which_is_where_it_goes() -> None:
    stored = {"webhook_url": "https://hooks.slack.com/services/T/B/secret", "text": "hi"}
    config = {"webhook_url": REDACTED, "text": "changed"}
    SendSlackMessage.keep_secrets(config, stored)
    assert config["webhook_url"] == stored["webhook_url"]
    with pytest.raises(InvalidPayload, match="no stored secret"):
        SendSlackMessage.keep_secrets({"webhook_url": REDACTED, "text": "x"}, None)


def test_a_url_password_is_shown_hidden_and_kept_only_for_the_same_url() -> None:
    stored = "https://shop:p%40ss-secret@crm.example.com/hook?x=1"
    shown = url_shown(stored)
    assert shown == "https://shop:********@crm.example.com/hook?x=1"
    assert restore_url_password(shown, stored) == stored
    assert url_shown("https://crm.example.com/hook") == "https://crm.example.com/hook"
    moved = "https://shop:********@attacker.example.net/hook?x=1"
    with pytest.raises(InvalidPayload, match="url changed: send the password in url again"):
        restore_url_password(moved, stored)
    with pytest.raises(InvalidPayload, match="no stored password"):
        restore_url_password(shown, None)
