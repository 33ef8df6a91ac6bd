"""Asking for a merge: the profile holds values that identify the person elsewhere too.

The action only names the profile paths (``data.contact.email.main``); after the run the engine
looks for other profiles holding the same values at those paths and merges them, with the same
rules (blocked values, salted identity index) as the automatic merging of the collector.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from tessera.errors import InvalidPayload
from tessera.workflow.action import (
    Action,
    ActionConfig,
    ActionContext,
    ActionResult,
    Output,
    split_path,
)

# Merge keys live where people's identifiers live; the same roots as TESSERA_MERGE_KEYS.
MERGE_ROOTS = ("data", "traits")
MAX_DEPTH = 10


def plain_profile_path(path: str) -> str:
    """``"profile@data.contact.email.main"`` or ``"data.contact.email.main"`` → the plain form
    merge keys use; ValueError saying what is wrong."""
    text = path.strip()
    if "@" in text:
        try:
            root, keys = split_path(text)
        except InvalidPayload as exc:
            raise ValueError(exc.message) from None
        if root != "profile":
            raise ValueError(f"{path!r}: only profile values can be merged on")
    else:
        keys = text.split(".")
        if any(not key for key in keys):
            raise ValueError(f"{path!r} has an empty key")
    if len(keys) < 2 or keys[0] not in MERGE_ROOTS:
        raise ValueError(f"{path!r}: merge on a value under data. or traits.")
    if len(keys) > MAX_DEPTH:
        raise ValueError(f"{path!r} is deeper than {MAX_DEPTH} keys")
    return ".".join(keys)


class MergeProfilesConfig(ActionConfig):
    paths: list[str] = Field(
        min_length=1,
        max_length=10,
        description=(
            "Profile paths whose values identify the person, e.g. data.contact.email.main or "
            "profile@traits.customer_id (under data or traits); kept in the plain form"
        ),
    )

    @field_validator("paths")
    @classmethod
    def _profile_paths(cls, paths: list[str]) -> list[str]:
        plain = [plain_profile_path(path) for path in paths]
        return list(dict.fromkeys(plain))


class MergeProfiles(Action[MergeProfilesConfig]):
    name = "merge_profiles"
    title = "Merge profiles"
    description = "After the run, merges the profile with others holding the same values here."
    config_model = MergeProfilesConfig
    outputs = ("payload",)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        # A path the profile holds no value at is kept too: the engine skips it, and a value
        # a later node of this run writes there still counts.
        context.need_profile()
        for path in self.config.paths:
            if path not in context.effects.merge_on:
                context.effects.merge_on.append(path)
        return Output("payload", payload)


ACTIONS = (MergeProfiles,)
