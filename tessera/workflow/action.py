"""The contract between the workflow engine and an action, built-in or third-party.

An action is a class with a ``name`` (unique in the registry), a configuration model (pydantic,
extra fields refused: it validates what a user saves and will draw the action's form), the output
ports it may answer on, and ``async run(payload, context)``.

- ``payload`` is the value that flowed in along the edge (the first node gets ``{}``).
- ``context`` holds the event, the profile and the session documents (plain JSON, mutable: a
  change made there is saved once when the whole workflow run ends), services (HTTP client,
  key-value memory) and ``effects`` the engine carries out after the run (events to emit, merges
  to make).

``run`` answers one ``Output`` (a port and the payload sent along its edges), a list of them (a
fork), ``None`` (this branch ends), or ``Suspend`` (continue from this node's port later: a
delay). It raises ``ActionError`` to stop the workflow with a message; any other exception is a
bug and is reported the same way, naming the node.

Dot paths name values in configurations: ``event@properties.price``, ``profile@traits.name``,
``session@context.page``, ``payload@items.0``, ``memory@…`` is not a path (memory has actions).
``read_path`` reads any of them; ``write_path`` writes the profile (only its writable parts:
traits, data, consents, interests, stats), the session (properties, context) or the payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tessera.core.reshaping import copy_json
from tessera.errors import InvalidPayload
from tessera.model.bounds import (
    DEFAULT_LIMITS,
    ProfileBudget,
    ProfileLimits,
    all_finite,
    is_number,
    out_of_bounds,
    within,
)

# REDACTED is part of the action contract (plugins compare with it): re-exported here.
from tessera.security.kept_secrets import REDACTED as REDACTED
from tessera.security.kept_secrets import restore_kept_secrets

if TYPE_CHECKING:
    import httpx

    from tessera.outbound.policy import OutboundPolicy
    from tessera.storage.automation_ports import KeyValueStore

PATH_ROOTS = ("event", "profile", "session", "payload")
PROFILE_WRITABLE = ("traits", "data", "consents", "interests", "stats")
# dict[str, number] in the Profile model: only numbers, one key below the root.
PROFILE_NUMERIC = frozenset({"interests", "stats"})
SESSION_WRITABLE = ("properties", "context")


class ActionError(Exception):
    """Raised by an action to stop the workflow run; the message goes into the node's trace."""


class BoundExceeded(ActionError):
    """The run stopped at a bound (model/bounds.py, core/patterns.py): unlike other
    failed runs, the request's answer says so in a warning."""


class ActionConfig(BaseModel):
    """Base of every action's configuration: unknown fields are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Output:
    port: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Suspend:
    """Continue the workflow later: after ``seconds``, from this node's ``port``."""

    seconds: float
    payload: Any
    port: str = "payload"


ActionResult = Output | list[Output] | Suspend | None


@dataclass(slots=True)
class EmittedEvent:
    """An internal event an action asks for; stored and matched against rules after the run."""

    type: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Effects:
    """What the engine does once the run is over."""

    emitted: list[EmittedEvent] = field(default_factory=list)
    # Profile paths whose values name the same person: merge with profiles holding them.
    merge_on: list[str] = field(default_factory=list)
    # (level, message) lines written by the log action; they go into the node's trace and
    # the server log.
    logs: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class ActionServices:
    """What actions may use beyond the documents. Built once per server and shared."""

    # Connects only where ``outbound`` allows (tessera/outbound/network.py).
    http: httpx.AsyncClient
    memory: KeyValueStore
    # The request-forgery policy, for connections made without ``http`` (SMTP).
    outbound: OutboundPolicy
    # How large a profile and its numbers may grow (model/bounds.py).
    limits: ProfileLimits = DEFAULT_LIMITS


@dataclass(slots=True)
class ActionContext:
    tenant: str
    event: dict[str, Any]
    profile: dict[str, Any] | None
    session: dict[str, Any] | None
    now: datetime
    services: ActionServices
    workflow_id: str = ""
    node_id: str = ""
    # A run of POST /workflow/{id}/debug: nothing it changes on the profile, the session or
    # the events is saved (memory actions and calls to other systems do happen).
    debug: bool = False
    effects: Effects = field(default_factory=Effects)
    profile_changed: bool = False
    session_changed: bool = False
    # The documents as they were before the run, copied at the first change (``need_profile``,
    # ``write``) so that the engine can put them back when the run fails; a run that only
    # reads copies nothing.
    profile_before: Any = None
    session_before: Any = None
    # What this run may still add to the profile; measured at its first profile write.
    profile_budget: ProfileBudget | None = None

    def keep_profile(self) -> None:
        if self.profile_before is None and self.profile is not None:
            self.profile_before = copy_json(self.profile)

    def keep_session(self) -> None:
        if self.session_before is None and self.session is not None:
            self.session_before = copy_json(self.session)

    def read(self, path: str, payload: Any) -> Any:
        return read_path(path, self, payload)

    def write(self, path: str, value: Any, payload: Any) -> Any:
        """Write ``value`` at ``path``; returns the payload (changed when the path is in it)."""
        return write_path(path, value, self, payload)

    def need_profile(self) -> dict[str, Any]:
        """The profile, to change it in place (use ``write`` where a path will do)."""
        if self.profile is None:
            raise ActionError("this event has no profile (a webhook event); nothing to change")
        self.keep_profile()
        return self.profile


A = TypeVar("A", bound=ActionConfig)


class Action(Generic[A]):
    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    config_model: ClassVar[type[ActionConfig]]
    outputs: ClassVar[tuple[str, ...]] = ("payload",)
    # Configuration fields holding secrets (passwords, webhook URLs, tokens): the API never
    # answers them, it shows REDACTED, and a saved REDACTED keeps the stored value ...
    secret_fields: ClassVar[tuple[str, ...]] = ()
    # ... unless one of these fields, which say where the secrets go (a URL, a server), is
    # not what it was: then the secrets must be sent again (tessera/security/kept_secrets.py).
    secret_destination: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: A) -> None:
        self.config = config

    @classmethod
    def check_config(cls, config: A) -> None:
        """Checks beyond the model (a template that compiles, a path that is writable):
        raise InvalidPayload naming the field. Called when a workflow is saved."""

    @classmethod
    def redact(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The configuration as the API shows it: every secret replaced by REDACTED."""
        shown = dict(config)
        for name in cls.secret_fields:
            if shown.get(name) not in (None, ""):
                shown[name] = REDACTED
        return shown

    @classmethod
    def keep_secrets(cls, config: dict[str, Any], stored: dict[str, Any] | None) -> None:
        """Put the stored value back wherever ``config`` (sent by a client) says REDACTED;
        InvalidPayload when there is no stored value to keep, or when a field of
        ``secret_destination`` changed (the secrets must then be sent again)."""
        restore_kept_secrets(
            config,
            stored,
            [(name,) for name in cls.secret_fields],
            cls.secret_destination,
            cls.config_defaults(),
        )

    @classmethod
    def config_defaults(cls) -> dict[str, Any]:
        """The default of every configuration field that has a plain one."""
        return {
            name: field.default
            for name, field in cls.config_model.model_fields.items()
            if not field.is_required() and field.default_factory is None
        }

    @classmethod
    def build(cls, raw: Mapping[str, Any]) -> Action[A]:
        """The action with a validated configuration; InvalidPayload naming what is wrong."""
        try:
            config = cls.config_model.model_validate(dict(raw))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg']}"
                for error in exc.errors()
            )
            raise InvalidPayload(f"action {cls.name!r}: {problems}") from None
        typed: A = config  # type: ignore[assignment]
        cls.check_config(typed)
        return cls(typed)

    async def run(self, payload: Any, context: ActionContext) -> ActionResult:
        raise NotImplementedError


# --- Dot paths --------------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


def split_path(path: str) -> tuple[str, list[str]]:
    """``"event@properties.price"`` → ``("event", ["properties", "price"])``; InvalidPayload
    when the root is unknown or a key is empty. ``payload@`` alone is the whole payload."""
    root, at, rest = path.partition("@")
    if not at or root not in PATH_ROOTS:
        raise InvalidPayload(
            f"path {path!r} must start with one of "
            + ", ".join(f"'{name}@'" for name in PATH_ROOTS)
        )
    keys = rest.split(".") if rest else []
    if any(not key for key in keys):
        raise InvalidPayload(f"path {path!r} has an empty key")
    return root, keys


def check_path(path: str, *, writable: bool = False) -> None:
    """InvalidPayload when ``path`` cannot be read (or, with ``writable``, written)."""
    root, keys = split_path(path)
    if not writable:
        return
    if root == "event":
        raise InvalidPayload(f"path {path!r}: the event cannot be changed by a workflow")
    if root == "profile" and (not keys or keys[0] not in PROFILE_WRITABLE):
        raise InvalidPayload(
            f"path {path!r}: only these parts of a profile can be written: "
            + ", ".join(PROFILE_WRITABLE)
        )
    if root == "session" and (not keys or keys[0] not in SESSION_WRITABLE):
        raise InvalidPayload(
            f"path {path!r}: only these parts of a session can be written: "
            + ", ".join(SESSION_WRITABLE)
        )
    if root in ("profile", "session") and len(keys) < 2:
        # A whole part replaced by one value (a string for all traits) would leave a record
        # that is no longer a profile or a session.
        raise InvalidPayload(f"path {path!r}: name a key inside {keys[0]}, e.g. {path}.name")
    if root == "profile" and keys[0] in PROFILE_NUMERIC and len(keys) != 2:
        raise InvalidPayload(f"path {path!r}: {keys[0]} holds numbers one key deep")


def _document(root: str, context: ActionContext, payload: Any) -> Any:
    if root == "event":
        return context.event
    if root == "profile":
        return context.profile
    if root == "session":
        return context.session
    return payload


def dig(document: Any, keys: list[str]) -> Any:
    """Follow ``keys`` through objects (and lists, by index); MISSING where the way ends."""
    current = document
    for key in keys:
        if isinstance(current, dict):
            if key not in current:
                return MISSING
            current = current[key]
        elif isinstance(current, list) and key.isdigit() and int(key) < len(current):
            current = current[int(key)]
        else:
            return MISSING
    return current


def read_path(path: str, context: ActionContext, payload: Any) -> Any:
    """The value at ``path``, or MISSING (falsy) when there is none."""
    root, keys = split_path(path)
    document = _document(root, context, payload)
    if document is None:
        return MISSING
    return dig(document, keys)


def write_path(path: str, value: Any, context: ActionContext, payload: Any) -> Any:
    """Set ``path`` to ``value`` (MISSING deletes it), creating objects on the way; returns the
    payload, replaced when the path is the whole payload. ActionError when a step is no object."""
    check_path(path, writable=True)
    root, keys = split_path(path)
    if root == "payload" and not keys:
        return None if value is MISSING else value
    if root == "profile":
        document = context.need_profile()
        if value is not MISSING:
            _check_profile_value(path, keys, value, document, context)
        context.profile_changed = True
    elif root == "session":
        if context.session is None:
            raise ActionError("this event has no session; nothing to change")
        context.keep_session()
        document = context.session
        context.session_changed = True
    else:
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ActionError(f"{path}: the payload is not an object")
        document = payload
    target = document
    for key in keys[:-1]:
        step = target.get(key)
        if step is None:
            if value is MISSING:
                return payload
            step = target[key] = {}
        if not isinstance(step, dict):
            raise ActionError(f"{path}: {key!r} holds {type(step).__name__}, not an object")
        target = step
    if value is MISSING:
        target.pop(keys[-1], None)
    else:
        target[keys[-1]] = value
    return payload


def _check_profile_value(
    path: str, keys: list[str], value: Any, document: dict[str, Any], context: ActionContext
) -> None:
    """ActionError (the run fails, the profile stays as it was) when ``value`` would break a
    bound of the profile (model/bounds.py): a number that is not finite or too large for a
    root of numbers, or a profile past its size or trait count."""
    limits = context.services.limits
    if keys[0] in PROFILE_NUMERIC:
        if not is_number(value):
            raise ActionError(f"{path}: {keys[0]} only holds numbers, not {_shown(value)}")
        if not within(value, limits.max_number):
            raise BoundExceeded(f"{path}: {_shown(value)} is {out_of_bounds(limits.max_number)}")
    elif not all_finite(value):
        raise BoundExceeded(f"{path}: a number in {_shown(value)} is not finite")
    if context.profile_budget is None:
        context.profile_budget = ProfileBudget(document, limits)
    reason = context.profile_budget.allows(document, keys, value)
    if reason is not None:
        raise BoundExceeded(f"{path} was not written: {reason}")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
