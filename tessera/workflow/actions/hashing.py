"""Hiding personal values in place: replacing them by a digest, or masking most characters.

Both actions change values where they are (the payload, the profile's writable parts, the
session), so a later step or the saved profile never holds the clear value. A path that holds
nothing is skipped: the same workflow runs for people who gave an e-mail address and who did not.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from tessera.errors import InvalidPayload
from tessera.workflow.action import (
    MISSING,
    PROFILE_NUMERIC,
    Action,
    ActionConfig,
    ActionContext,
    ActionError,
    ActionResult,
    Output,
    check_path,
    split_path,
)

MAX_PATHS = 50


def check_text_paths(paths: list[str]) -> None:
    """Each path must be writable and able to hold a string (interests and stats hold numbers)."""
    for index, path in enumerate(paths):
        try:
            check_path(path, writable=True)
        except InvalidPayload as exc:
            raise InvalidPayload(f"paths[{index}]: {exc.message}") from None
        root, keys = split_path(path)
        if root == "profile" and keys[0] in PROFILE_NUMERIC:
            raise InvalidPayload(f"paths[{index}]: profile {keys[0]} hold numbers, not text")


def _transform(value: Any, path: str, change: Callable[[str], str]) -> Any:
    """``value`` with ``change`` applied to its text: a string, an integer (an id or a phone
    number sent as a number), or each of a list of them."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return change(str(value))
    if isinstance(value, list):
        return [_transform(item, path, change) for item in value]
    raise ActionError(f"{path}: cannot hide a {type(value).__name__}; only text and integers")


def _apply(
    paths: list[str], change: Callable[[str], str], payload: Any, context: ActionContext
) -> Any:
    for path in paths:
        value = context.read(path, payload)
        if value is MISSING or value is None:
            continue
        payload = context.write(path, _transform(value, path, change), payload)
    return payload


class HashFieldsConfig(ActionConfig):
    paths: list[str] = Field(
        min_length=1,
        max_length=MAX_PATHS,
        description=(
            "Writable dot paths whose values are replaced by their hex digest, e.g. "
            "profile@data.contact.email.main or payload@email. Missing values are skipped."
        ),
    )
    algorithm: Literal["sha256", "sha1", "md5", "blake2b"] = Field(
        "sha256", description="The digest; sha1 and md5 only to match an outside system's ids."
    )
    salt: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description=(
            "Secret key: when set, the digest is an HMAC keyed with it, so nobody without it "
            "can find a value by hashing guesses. Keep it the same to keep digests comparable."
        ),
    )


class HashFields(Action[HashFieldsConfig]):
    name = "hash_fields"
    title = "Hash fields"
    description = "Replaces text values by their digest (optionally keyed with a secret salt)."
    config_model = HashFieldsConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: HashFieldsConfig) -> None:
        check_text_paths(config.paths)

    def _digest(self, text: str) -> str:
        data = text.encode()
        if self.config.salt is not None:
            return hmac.new(self.config.salt.encode(), data, self.config.algorithm).hexdigest()
        return hashlib.new(self.config.algorithm, data).hexdigest()

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        return Output("payload", _apply(self.config.paths, self._digest, payload, context))


class MaskFieldsConfig(ActionConfig):
    paths: list[str] = Field(
        min_length=1,
        max_length=MAX_PATHS,
        description="Writable dot paths whose text is masked, e.g. payload@card or profile@…",
    )
    keep_start: int = Field(1, ge=0, le=64, description="Characters left visible at the start")
    keep_end: int = Field(1, ge=0, le=64, description="Characters left visible at the end")
    mask_char: str = Field("*", min_length=1, max_length=1, description="Replaces the others")
    email_domain: bool = Field(
        False,
        description=(
            "Mask only the part before the last '@' and keep the domain: "
            "jane@example.com → j**e@example.com. Text without '@' is masked whole."
        ),
    )


class MaskFields(Action[MaskFieldsConfig]):
    name = "mask_fields"
    title = "Mask fields"
    description = "Replaces all but the first and last characters of text values by a mask."
    config_model = MaskFieldsConfig
    outputs = ("payload",)

    @classmethod
    def check_config(cls, config: MaskFieldsConfig) -> None:
        check_text_paths(config.paths)

    def _mask_part(self, text: str) -> str:
        start, end = self.config.keep_start, self.config.keep_end
        if start + end >= len(text):
            # Showing every character of a short value would hide nothing: mask it all.
            return self.config.mask_char * len(text)
        hidden = len(text) - start - end
        return text[:start] + self.config.mask_char * hidden + text[len(text) - end :]

    def _mask(self, text: str) -> str:
        if self.config.email_domain:
            local, at, domain = text.rpartition("@")
            if at:
                return self._mask_part(local) + at + domain
        return self._mask_part(text)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        return Output("payload", _apply(self.config.paths, self._mask, payload, context))


ACTIONS = (HashFields, MaskFields)
