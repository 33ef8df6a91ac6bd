"""Secrets the API never shows back, kept when a client sends ``REDACTED`` in their place; but
only while they go where they went.

The API answers a stored secret (a destination's secret header, a workflow node's password or
webhook URL, the password in a URL's ``user:password@``) as ``REDACTED``, so that a client can
send a configuration back as it got it without knowing the secret. That must not let whoever
holds an API token send the secret somewhere of their choosing: when a field that says where the
secrets go (a URL, an SMTP server and how it is reached) differs from the stored one, every kept
secret must be sent again (422 naming them). One rule for destinations and for every workflow
action (``tessera.workflow.action.Action.keep_secrets``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tessera.errors import InvalidPayload
from tessera.outbound.urls import parsed_url

REDACTED = "********"

# A path into a configuration: ("password",), ("headers", "Authorization").
SecretPath = tuple[str, ...]
_MISSING = object()


def restore_kept_secrets(
    sent: dict[str, Any],
    stored: Mapping[str, Any] | None,
    secrets: Iterable[SecretPath],
    where: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """Put the stored value back wherever ``sent`` holds REDACTED at one of the ``secrets``
    paths, and answer the names of the secrets kept. InvalidPayload when there is no stored
    value to keep, or when a field in ``where`` (compared with ``defaults`` for a field not
    given) is not what it was: a kept secret never goes to a new destination."""
    kept: list[str] = []
    for path in secrets:
        if _get(sent, path) != REDACTED:
            continue
        name = ".".join(path)
        old = _get(stored, path) if stored is not None else _MISSING
        if not isinstance(old, str) or old == REDACTED:
            raise InvalidPayload(f"{name}: there is no stored secret to keep")
        _set(sent, path, old)
        kept.append(name)
    if kept and stored is not None:
        fallback = defaults or {}
        changed = [
            field
            for field in where
            if sent.get(field, fallback.get(field)) != stored.get(field, fallback.get(field))
        ]
        if changed:
            raise must_send_again(kept, changed)
    return kept


def must_send_again(kept: Sequence[str], changed: Sequence[str]) -> InvalidPayload:
    return InvalidPayload(
        f"{', '.join(changed)} changed: send {', '.join(kept)} again (a kept secret "
        f"{REDACTED!r} is never sent to a new destination)"
    )


def _get(document: Mapping[str, Any] | None, path: SecretPath) -> Any:
    current: Any = document
    for key in path:
        if not isinstance(current, Mapping) or key not in current:
            return _MISSING
        current = current[key]
    return current


def _set(document: dict[str, Any], path: SecretPath, value: str) -> None:
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


# --- The password of a URL's user:password@ ------------------------------------------------


def url_shown(url: str) -> str:
    """``url`` as the API answers it: a password in it replaced by REDACTED."""
    parsed = parsed_url(url)
    if parsed is None or not parsed.password:
        return url
    return str(parsed.copy_with(username=parsed.username, password=REDACTED))


def restore_url_password(sent: str, stored: str | None, field: str = "url") -> str:
    """``sent`` with its REDACTED password replaced by the stored URL's, which is only allowed
    when the URL is otherwise the same: a kept password never goes to a new address."""
    parsed = parsed_url(sent)
    if parsed is None or parsed.password != REDACTED:
        return sent  # a bad URL is refused with a reason by the URL's own check
    stored_url = parsed_url(stored) if stored is not None else None
    if stored is None or stored_url is None or not stored_url.password:
        raise InvalidPayload(f"{field}: there is no stored password to keep")
    if url_shown(stored) != str(parsed):
        raise must_send_again([f"the password in {field}"], [field])
    return stored
