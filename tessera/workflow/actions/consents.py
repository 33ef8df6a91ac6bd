"""Consents from a workflow: record one on the profile, or branch on whether it was given.

A consent on a profile is ``consents.<id> = {"granted": bool, "time": iso}``, the shape the
collector and the consent rules use. ``require_consents`` counts a consent the profile never
answered as not granted: a workflow that needs an agreement must not assume one.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from tessera.workflow.action import Action, ActionConfig, ActionContext, ActionResult, Output

# The same rule as consent type ids (tessera/api/consents.py): keys under profile.consents.
CONSENT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ConsentId = Annotated[
    str,
    Field(
        pattern=CONSENT_PATTERN,
        description="Consent type id: 1-64 of a-z, 0-9, '_', '-' (e.g. marketing-email)",
    ),
]


class AddConsentConfig(ActionConfig):
    consent: ConsentId
    granted: bool = Field(True, description="True records an agreement, False a refusal")


class AddConsent(Action[AddConsentConfig]):
    name = "add_consent"
    title = "Record consent"
    description = "Records on the profile that a consent was granted (or refused) now."
    config_model = AddConsentConfig
    outputs = ("payload",)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        context.need_profile()
        answer = {"granted": self.config.granted, "time": context.now.isoformat()}
        return Output(
            "payload", context.write(f"profile@consents.{self.config.consent}", answer, payload)
        )


class RequireConsentsConfig(ActionConfig):
    consents: list[ConsentId] = Field(
        min_length=1, max_length=50, description="Consent type ids to look for"
    )
    require_all: bool = Field(
        True, description="True: every consent must be granted; False: any one of them is enough"
    )


class RequireConsents(Action[RequireConsentsConfig]):
    name = "require_consents"
    title = "Has consents"
    description = "Answers on 'true' when the profile granted the consents, else on 'false'."
    config_model = RequireConsentsConfig
    outputs = ("true", "false")

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        # An event without a profile (a webhook) has agreed to nothing.
        given = (context.profile or {}).get("consents")
        given = given if isinstance(given, dict) else {}
        granted = [_granted(given.get(consent)) for consent in self.config.consents]
        ok = all(granted) if self.config.require_all else any(granted)
        return Output("true" if ok else "false", payload)


def _granted(value: Any) -> bool:
    return isinstance(value, dict) and value.get("granted") is True


ACTIONS = (AddConsent, RequireConsents)
