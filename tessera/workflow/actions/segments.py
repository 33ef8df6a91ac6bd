"""Putting a profile into a segment or taking it out, from a workflow.

Segments are a list of ids on the profile that rules can require (``Rule.segment``); they are
Tessera's own part of the profile, so no dot path writes them and these actions are the way.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tessera.workflow.action import Action, ActionConfig, ActionContext, ActionResult, Output

SEGMENT_PATTERN = r"^[A-Za-z0-9._~-]{1,128}$"


class SegmentConfig(ActionConfig):
    segment: str = Field(
        pattern=SEGMENT_PATTERN,
        description="Segment id: 1-128 of letters, digits, '.', '_', '~', '-' (e.g. vip)",
    )


def _segments(profile: dict[str, Any]) -> set[str]:
    found = profile.get("segments")
    return {item for item in found if isinstance(item, str)} if isinstance(found, list) else set()


def _store(profile: dict[str, Any], segments: set[str], context: ActionContext) -> None:
    # Sorted and without duplicates; an unchanged list does not count as a profile change.
    wanted = sorted(segments)
    if profile.get("segments") != wanted:
        profile["segments"] = wanted
        context.profile_changed = True


class AddSegment(Action[SegmentConfig]):
    name = "add_segment"
    title = "Add to segment"
    description = "Puts the profile into a segment (once; adding it again changes nothing)."
    config_model = SegmentConfig
    outputs = ("payload",)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        profile = context.need_profile()
        _store(profile, _segments(profile) | {self.config.segment}, context)
        return Output("payload", payload)


class RemoveSegment(Action[SegmentConfig]):
    name = "remove_segment"
    title = "Remove from segment"
    description = "Takes the profile out of a segment (nothing happens when it is not in it)."
    config_model = SegmentConfig
    outputs = ("payload",)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        profile = context.need_profile()
        _store(profile, _segments(profile) - {self.config.segment}, context)
        return Output("payload", payload)


ACTIONS = (AddSegment, RemoveSegment)
