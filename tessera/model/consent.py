"""Consent types: what a person can agree to, and the rules of that agreement."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec


class ConsentType(msgspec.Struct):
    id: str
    tenant: str
    name: str
    created: datetime
    description: str = ""
    # A revokable consent can be withdrawn by a later consent-revoked event; one that is not
    # revokable (e.g. terms of a contract) stays granted once given.
    revokable: bool = True
    # What a profile that never answered is taken to have said.
    default: Literal["grant", "deny"] = "deny"
    # Rules and workflows that need this consent do not run for profiles without it.
    required: bool = False
    enabled: bool = True
