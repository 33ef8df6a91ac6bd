"""/track and /collect: parse and check the request and its source, then hand the batch to the
pipeline. An ASGI app in front of the management API, so collection pays for no framework."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.types import Receive, Scope, Send

from tessera.collect.history_intake import IMPORT_PATH, HistoryIntake
from tessera.collect.http import (
    CORS_HEADERS,
    STORED_HEADERS,
    client_ip,
    header,
    read_body,
    send_empty,
    send_json,
    stored_headers,
)
from tessera.collect.outage_log import OutageLog
from tessera.collect.payload import (
    TrackPayload,
    check_id,
    decode_json_object,
    decode_track,
)
from tessera.collect.source_keys import require_proof
from tessera.errors import (
    BadRequest,
    InvalidPayload,
    NotFound,
    StorageUnavailable,
    TesseraError,
)
from tessera.model.common import DEFAULT_TENANT, derived_id, utcnow
from tessera.model.event import checked_event_type
from tessera.model.event_time import live_time_warning
from tessera.model.source import EventSource
from tessera.pipeline.request import IncomingBatch, IncomingEvent, IngestResult, Intake
from tessera.pipeline.sources import SourceDirectory
from tessera.settings import Settings

ASGIApp = Any

log = logging.getLogger(__name__)


class CollectionApp:
    """Answers /track and /collect/…; passes every other request to ``fallback``."""

    def __init__(
        self,
        *,
        settings: Settings,
        sources: SourceDirectory,
        intake: Intake,
        fallback: ASGIApp,
        is_outage: Callable[[BaseException], bool],
        history: HistoryIntake | None = None,
    ) -> None:
        self._settings = settings
        self._history = history
        self._sources = sources
        self._intake = intake
        self._fallback = fallback
        # Whether an error no store turned into StorageUnavailable is still a storage outage
        # (storage/outages.py; given, as collection imports no backend).
        self._is_outage = is_outage
        self._outages = OutageLog(log)
        self._stored_headers = STORED_HEADERS | settings.stored_header_names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == "/track" or path.startswith("/collect/") or path == IMPORT_PATH
        ):
            await self._fallback(scope, receive, send)
            return
        method: str = scope["method"]
        if method == "OPTIONS":
            await send_empty(send, 204, CORS_HEADERS)
            return
        try:
            if path == IMPORT_PATH:
                if method != "POST" or self._history is None:
                    await send_json(send, 405, {"detail": "use POST for /import/events"}, [])
                    return
                counts = await self._history(scope, receive)
                await send_json(send, 200, counts, [])
                return
            if path == "/track":
                if method != "POST":
                    await send_json(send, 405, {"detail": "use POST for /track"}, CORS_HEADERS)
                    return
                result = await self._track(scope, receive)
            else:
                if method not in ("GET", "POST"):
                    await send_json(send, 405, {"detail": "use GET or POST"}, CORS_HEADERS)
                    return
                result = await self._collect(scope, receive, path)
        except StorageUnavailable as error:
            # Anyone may call these endpoints: the answer names the kind of service that is
            # away, the log has what failed and where (addresses, client errors).
            self._outages.answered_503(path, error)
            await _send_error(send, error)
            return
        except TesseraError as error:
            await _send_error(send, error)
            return
        except Exception as error:  # noqa: BLE001 - the last-resort boundary of collection
            await self._send_unexpected(send, path, error)
            return
        await send_json(send, 200, _answer(result), CORS_HEADERS)

    async def _send_unexpected(self, send: Send, path: str, error: Exception) -> None:
        """An error that is no TesseraError. A storage outage that got past its store without
        becoming StorageUnavailable is still one: 503 with Retry-After (logged with its
        traceback, to find the store that let it through). Anything else is a bug: 500."""
        if self._is_outage(error):
            log.warning("%s: storage outage not reported by its store", path, exc_info=error)
            await _send_error(send, StorageUnavailable("storage outage not reported by its store"))
            return
        log.error("%s: unexpected error", path, exc_info=error)
        await send_json(send, 500, {"detail": "internal error (logged)"}, CORS_HEADERS)

    async def _track(self, scope: Scope, receive: Receive) -> IngestResult:
        body = await read_body(scope, receive, self._settings.max_body_bytes)
        payload = decode_track(
            body,
            max_events=self._settings.max_events_per_request,
            max_depth=self._settings.max_json_depth,
        )
        source = await self._sources.require_enabled(DEFAULT_TENANT, payload.source.id)
        require_proof(scope, source, body, time.time())
        events = [_incoming(index, event, source) for index, event in enumerate(payload.events)]
        batch = IncomingBatch(
            tenant=DEFAULT_TENANT,
            source=source,
            events=events,
            session_id=_given(payload.session),
            profile_id=_given(payload.profile),
            context=payload.context,
            properties=payload.properties,
            client_ip=client_ip(scope),
            headers=stored_headers(scope, self._stored_headers),
            debug=self._settings.track_debug and payload.options.get("debugger") is True,
        )
        result = await self._intake(batch)
        result.warnings += _time_warnings(events)
        return result

    async def _collect(self, scope: Scope, receive: Receive, path: str) -> IngestResult:
        # Split the raw path, then decode each part once: an encoded "/" (%2F) stays inside
        # its part, and "%2525" stays "%25" instead of being decoded twice.
        raw = scope.get("raw_path") or path.encode()
        parts = [
            unquote(part.decode("latin-1"))
            for part in raw.split(b"?")[0].removeprefix(b"/collect/").split(b"/")
        ]
        if len(parts) not in (2, 3) or not all(parts):
            raise NotFound(
                "use /collect/{event_type}/{source_id} or /collect/{event_type}/{source_id}/"
                "{session_id}"
            )
        event_type = checked_event_type(parts[0], "event type")
        check_id(parts[1], "source id")
        session_id = check_id(parts[2], "session id") if len(parts) == 3 else None
        body = b""
        if scope["method"] == "POST":
            body = await read_body(scope, receive, self._settings.max_body_bytes)
        source = await self._sources.require_enabled(DEFAULT_TENANT, parts[1])
        require_proof(scope, source, body, time.time())
        properties = self._collect_properties(scope, body)
        batch = IncomingBatch(
            tenant=DEFAULT_TENANT,
            source=source,
            events=[IncomingEvent(type=event_type, properties=properties)],
            profile_less=len(parts) == 2,
            session_id=session_id,
            client_ip=client_ip(scope),
            headers=stored_headers(scope, self._stored_headers),
        )
        return await self._intake(batch)

    def _collect_properties(self, scope: Scope, body: bytes) -> dict[str, Any]:
        """JSON, a form, or the query string become the event's properties."""
        properties = _flat_form(scope.get("query_string", b"").decode("latin-1"))
        if scope["method"] != "POST":
            return properties
        if not body.strip():
            return properties
        content_type = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded":
            try:
                form = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequest(f"the form is not valid UTF-8 at byte {exc.start}") from None
            return {**properties, **_flat_form(form)}
        if content_type in ("", "application/json", "text/plain") or content_type.endswith("+json"):
            document = decode_json_object(
                body, max_depth=self._settings.max_json_depth, where="body"
            )
            return {**properties, **document}
        raise InvalidPayload(
            f"content type {content_type!r} is not supported; send JSON or a urlencoded form"
        )


async def _send_error(send: Send, error: TesseraError) -> None:
    headers = CORS_HEADERS
    detail = error.message
    if error.retry_after is not None:  # 503 (storage), 429 (a throttle)
        headers = [*CORS_HEADERS, (b"retry-after", str(error.retry_after).encode())]
    if isinstance(error, StorageUnavailable):
        detail = error.public_message
    await send_json(send, error.status_code, {"detail": detail}, headers)


def _time_warnings(events: list[IncomingEvent]) -> list[str]:
    """The events whose time is filed elsewhere than it says (model/event_time.py): taken
    in, but the client is told, rather than finding them later in an unexpected partition."""
    arrived = utcnow()
    warnings: list[str] = []
    for index, event in enumerate(events):
        if event.time is not None:
            warning = live_time_warning(f"events[{index}].time", event.time, arrived)
            if warning is not None:
                warnings.append(warning)
    return warnings


def _given(reference: Any) -> str | None:
    if reference is None or not reference.id:
        return None
    return str(reference.id)


def _incoming(index: int, event: Any, source: EventSource) -> IncomingEvent:
    return IncomingEvent(
        type=checked_event_type(event.type, f"events[{index}].type"),
        id=_event_id(event.id or None, source),
        time=event.time,
        properties=event.properties,
        context=event.context,
        options=event.options,
        tags=event.tags,
    )


def _event_id(given: str | None, source: EventSource) -> str | None:
    """The id an event is stored under. A server source's own ids are kept (an order number
    is an order number). A public client's are its own business: stored under an id made from
    the source and the id it gave, so a retry still meets its event, but nobody can take an id
    ahead of a server source ("order-777" sent from a browser first) and have the real event
    dropped as a repeat."""
    if given is None or source.trusted:
        return given
    return derived_id("event", source.tenant, source.id, given)


def _flat_form(text: str) -> dict[str, Any]:
    """One value stays a string; a repeated field becomes a list."""
    parsed = parse_qs(text, keep_blank_values=True)
    return {key: values[0] if len(values) == 1 else values for key, values in parsed.items()}


def _answer(result: IngestResult) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "profile": {"id": result.profile_id} if result.profile_id else None,
        "session": {"id": result.session_id} if result.session_id else None,
        "events": result.event_ids,
        "errors": result.errors,
        "warnings": result.warnings,
        "ux": [],
        "response": {},
    }
    if result.debug is not None:
        answer["debug"] = result.debug
    return answer


__all__ = ["CollectionApp", "TrackPayload"]
