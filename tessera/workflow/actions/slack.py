"""``send_slack_message``: post a message to a Slack incoming webhook (or any service speaking
the same JSON: Mattermost, Rocket.Chat …).

It POSTs ``{"text": …}`` (plus ``channel`` and ``username`` when set) and retries like
``http_call`` does. The webhook URL is the credential (whoever has it can post), so it is kept as
``SecretStr`` and never appears in a payload or a message; errors say only what the service
answered.

Ports: ``payload`` (accepted; the payload goes on unchanged) and ``error``
(``{"status": 404 | None, "error": "…"}``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr

from tessera.errors import InvalidPayload
from tessera.workflow.action import Action, ActionConfig, ActionContext, ActionResult, Output
from tessera.workflow.actions.http import send_with_retries, valid_runtime_url
from tessera.workflow.actions.template import as_text, check_workflow_templates, render_value

MAX_TEXT_LENGTH = 40_000  # Slack's own limit for a message's text
MAX_ERROR_BODY = 200


class SendSlackMessageConfig(ActionConfig):
    webhook_url: SecretStr = Field(
        description="The incoming webhook's URL (https://hooks.slack.com/services/…); a secret, "
        "never shown back."
    )
    text: str = Field(min_length=1, description="The message; a template.")
    channel: str | None = Field(
        None, description="Post to this channel instead of the webhook's own, where allowed."
    )
    username: str | None = Field(None, description="The name to post as, where allowed.")
    timeout_s: float = Field(5.0, gt=0, le=60, description="Seconds to wait for each attempt.")
    retries: int = Field(
        2, ge=0, le=5, description="Further attempts after a connection error, a 5xx or a 429."
    )


class SendSlackMessage(Action[SendSlackMessageConfig]):
    name = "send_slack_message"
    title = "Send a Slack message"
    description = "Posts a message built from a template to a Slack incoming webhook."
    config_model = SendSlackMessageConfig
    secret_fields = ("webhook_url",)
    outputs = ("payload", "error")

    @classmethod
    def check_config(cls, config: SendSlackMessageConfig) -> None:
        if valid_runtime_url(config.webhook_url.get_secret_value()) is None:
            raise InvalidPayload("webhook_url: not an http:// or https:// URL")
        check_workflow_templates(config.text, "text")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        config = self.config
        text = as_text(render_value(config.text, "text", context, payload))
        if not text.strip():
            return Output("error", {"status": None, "error": "text: rendered empty"})
        message: dict[str, Any] = {"text": text[:MAX_TEXT_LENGTH]}
        if config.channel:
            message["channel"] = config.channel
        if config.username:
            message["username"] = config.username
        result = await send_with_retries(
            context.services.http,
            "POST",
            config.webhook_url.get_secret_value(),
            headers={},
            json_body=message,
            timeout_s=config.timeout_s,
            retries=config.retries,
        )
        if result.ok:
            return Output("payload", payload)
        if result.status is None:
            error = "the webhook did not answer (no connection or a timeout)"
        else:
            answer = as_text(result.body)[:MAX_ERROR_BODY]
            error = f"the webhook answered {result.status}: {answer}".rstrip(": ")
        return Output("error", {"status": result.status, "error": error})


ACTIONS = (SendSlackMessage,)
