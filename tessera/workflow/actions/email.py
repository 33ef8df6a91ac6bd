"""``send_email``: send a message through an SMTP server, its fields written as templates.

``to``, ``subject``, ``body`` and ``html`` are templates over ``event``, ``profile``, ``session``
and ``payload``, e.g. ``to: "{{ profile.data.contact.email.main }}"``. ``to`` may render to one
address, several separated by commas, or a list of them.

Ports:

- ``payload``: the message was accepted by the server. The payload goes on with
  ``"email": {"to": [...], "message_id": "<…>"}`` added (an incoming payload that is no object
  is replaced by that object).
- ``error``: no recipient, a refused recipient, a failed login, no connection:
  ``{"error": "…", "email": {"to": [...]}}``. A profile without an address is not a bug of the
  workflow, so it is a port to branch on rather than a stopped run.

The password is a secret: the configuration keeps it as ``SecretStr`` (shown as ``**********``
when the configuration is printed or dumped) and no message names it.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from typing import Any, Literal

import aiosmtplib
from pydantic import Field, SecretStr

from tessera.errors import InvalidPayload
from tessera.outbound.policy import OutboundRefused
from tessera.outbound.sockets import checked_socket
from tessera.workflow.action import Action, ActionConfig, ActionContext, ActionResult, Output
from tessera.workflow.actions.template import as_text, check_workflow_templates, render_value

MAX_RECIPIENTS = 50
_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


class SendEmailConfig(ActionConfig):
    smtp_host: str = Field(min_length=1, max_length=255, description="The SMTP server's name.")
    smtp_port: int = Field(
        587, ge=1, le=65535, description="Its port: usually 587 (STARTTLS), 465 (TLS), 25."
    )
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="'starttls': upgrade the connection before sending (required, usually port "
        "587); 'tls': TLS from the start (usually 465); 'none': plain text, for a relay on a "
        "trusted network only.",
    )
    verify_certificate: bool = Field(
        True, description="Check the server's TLS certificate; turn off for self-signed ones."
    )
    username: str | None = Field(None, description="Login, when the server wants one.")
    password: SecretStr | None = Field(
        None, description="Password of the login; a secret, never shown back."
    )
    timeout_s: float = Field(10.0, gt=0, le=60, description="Seconds to wait for the server.")
    sender: str = Field(
        min_length=3,
        max_length=320,
        description="The From address, e.g. 'Shop <news@shop.example>'.",
    )
    to: str | list[str] = Field(
        description="Recipients: a template such as '{{ profile.data.contact.email.main }}', "
        "addresses separated by commas, or a list of them.",
    )
    subject: str = Field(max_length=1000, description="The subject; a template.")
    body: str = Field(description="The plain-text body; a template.")
    html: str | None = Field(
        None, description="An HTML version of the body, sent alongside the text; a template."
    )


def _recipients(rendered: Any) -> list[str]:
    """Addresses out of what ``to`` rendered to; empty strings and None are dropped."""
    items = rendered if isinstance(rendered, list) else [rendered]
    texts = [as_text(item) for item in items if item not in (None, "")]
    return [address for _name, address in getaddresses(texts) if address]


def _one_line(text: str) -> str:
    # A line break in a header would let an event's data add headers of its own.
    return " ".join(text.splitlines()).strip()


class SendEmail(Action[SendEmailConfig]):
    name = "send_email"
    title = "Send an e-mail"
    description = (
        "Sends an e-mail through an SMTP server; recipients, subject and body are templates."
    )
    config_model = SendEmailConfig
    secret_fields = ("password",)
    # Where the password goes, and how openly: a kept password is never sent to another
    # server, nor over a connection that became plain or unchecked.
    secret_destination = ("smtp_host", "smtp_port", "security", "verify_certificate")
    outputs = ("payload", "error")

    @classmethod
    def check_config(cls, config: SendEmailConfig) -> None:
        if (config.username is None) != (config.password is None):
            raise InvalidPayload("username and password: give both or neither")
        addresses = getaddresses([config.sender])
        if len(addresses) != 1 or not _ADDRESS.match(addresses[0][1]):
            raise InvalidPayload(f"sender: {config.sender!r} is not an e-mail address")
        check_workflow_templates(config.to, "to")
        check_workflow_templates(config.subject, "subject")
        check_workflow_templates(config.body, "body")
        check_workflow_templates(config.html, "html")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        config = self.config
        to = _recipients(render_value(config.to, "to", context, payload))
        bad = [address for address in to if not _ADDRESS.match(address)]
        problem = None
        if not to:
            problem = "no recipient: 'to' rendered empty"
        elif bad:
            problem = f"not e-mail addresses: {', '.join(bad)}"
        elif len(to) > MAX_RECIPIENTS:
            problem = f"more than {MAX_RECIPIENTS} recipients"
        if problem is not None:
            return Output("error", {"error": problem, "email": {"to": to}})

        message = self._message(to, payload, context)
        where = f"{config.smtp_host}:{config.smtp_port}"
        try:
            # Connected here, to an address the request-forgery policy allows; the client
            # still knows the server by its name, for TLS.
            connection = await checked_socket(
                config.smtp_host,
                config.smtp_port,
                context.services.outbound,
                timeout_s=config.timeout_s,
            )
        except OutboundRefused as exc:
            return Output("error", {"error": f"{where}: {exc}", "email": {"to": to}})
        except (OSError, TimeoutError) as exc:
            error = f"connecting to {where} failed: {type(exc).__name__}: {exc}"
            return Output("error", {"error": error, "email": {"to": to}})
        try:
            await aiosmtplib.send(
                message,
                hostname=config.smtp_host,
                sock=connection,
                username=config.username,
                password=config.password.get_secret_value() if config.password else None,
                use_tls=config.security == "tls",
                start_tls=config.security == "starttls",
                validate_certs=config.verify_certificate,
                timeout=config.timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # aiosmtplib's messages quote the server's answer, never the password.
            error = f"sending through {where} failed: {type(exc).__name__}: {exc}"
            return Output("error", {"error": error, "email": {"to": to}})
        finally:
            connection.close()  # the client closed it already unless it failed early
        sent = {"to": to, "message_id": message["Message-ID"]}
        if isinstance(payload, dict):
            return Output("payload", {**payload, "email": sent})
        return Output("payload", {"email": sent})

    def _message(self, to: list[str], payload: Any, context: ActionContext) -> EmailMessage:
        config = self.config
        subject = as_text(render_value(config.subject, "subject", context, payload))
        body = as_text(render_value(config.body, "body", context, payload))
        message = EmailMessage()
        message["From"] = config.sender
        message["To"] = ", ".join(to)
        message["Subject"] = _one_line(subject)
        message["Date"] = formatdate(context.now.timestamp(), localtime=False)
        domain = getaddresses([config.sender])[0][1].rpartition("@")[2]
        message["Message-ID"] = make_msgid(domain=domain)
        message.set_content(body)
        if config.html is not None:
            html = as_text(render_value(config.html, "html", context, payload))
            message.add_alternative(html, subtype="html")
        return message


ACTIONS = (SendEmail,)
