"""POST /import/events: a server source's history, as JSON lines (docs/import.md).

Who may import: a *server* source, proven by its key (collect/source_keys.py), not an admin's
sign-in. An import decides what an event's id is (the ids in the file are kept, which is what
makes a second import a no-op), names profile ids and files events years back; that is what
the trust model gives a server source and refuses a public one. A source key is also what a
scheduled job holds: long-lived, revocable, and good for this one source's events only, where
an admin token would expire mid-import and open the whole management API.

The request body holds at most TESSERA_MAX_BODY_BYTES and ``MAX_LINES`` lines; the CLI sends
a file in such chunks. A line that is no event fails the whole request with 422 naming its
line (nothing of the request is taken in); an event whose time is out of bounds
(model/event_time.py) is refused and counted with its reason, the others are taken in.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope

from tessera.collect.history_lines import decode_line
from tessera.collect.http import read_body
from tessera.collect.payload import UTF8_BOM, check_id
from tessera.collect.source_keys import require_proof
from tessera.errors import BadRequest, Forbidden, InvalidPayload
from tessera.model.common import DEFAULT_TENANT, utcnow
from tessera.model.event_time import import_time_problem
from tessera.pipeline.history import HistoryEvent, HistoryImporter, ImportCounts
from tessera.pipeline.sources import SourceDirectory
from tessera.settings import Settings

IMPORT_PATH = "/import/events"
# Events per request: what one request holds in memory and takes in before it answers.
MAX_LINES = 10_000


class HistoryIntake:
    def __init__(
        self, *, settings: Settings, sources: SourceDirectory, importer: HistoryImporter
    ) -> None:
        self._settings = settings
        self._sources = sources
        self._importer = importer

    async def __call__(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        source_id = _source_id(scope)
        body = await read_body(scope, receive, self._settings.max_body_bytes)
        source = await self._sources.require_enabled(DEFAULT_TENANT, source_id)
        if not source.trusted:
            raise Forbidden(
                f"event source {source_id!r} is public: history is imported through a server "
                "source (trust: server), with its key"
            )
        require_proof(scope, source, body, time.time())
        events = self._events(body)
        counts = ImportCounts()
        accepted = self._within_bounds(events, counts.refused)
        await self._importer.take_in(source, accepted, counts)
        return {"lines": len(events), **counts.as_dict()}

    def _events(self, body: bytes) -> list[HistoryEvent]:
        if body.startswith(UTF8_BOM):
            body = body[len(UTF8_BOM) :]
        lines = body.split(b"\n")
        events: list[HistoryEvent] = []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            if len(events) == MAX_LINES:
                raise InvalidPayload(f"more than {MAX_LINES} events in one request")
            events.append(decode_line(raw, number, max_depth=self._settings.max_json_depth))
        if not events:
            raise InvalidPayload("the body holds no events (one JSON event per line)")
        return events

    def _within_bounds(
        self, events: list[HistoryEvent], refused: Counter[str]
    ) -> list[HistoryEvent]:
        now = utcnow()
        retention = self._settings.retention_event_days
        kept: list[HistoryEvent] = []
        for item in events:
            moment = item.event.time
            problem = None if moment is None else import_time_problem(moment, now, retention)
            if problem is None:
                kept.append(item)
            else:
                refused[problem] += 1
        return kept


def _source_id(scope: Scope) -> str:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    given = query.get("source", [])
    if len(given) != 1:
        raise BadRequest("name the importing event source once: /import/events?source=<id>")
    return check_id(given[0], "source")
