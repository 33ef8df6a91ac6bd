"""Steady ``/track`` traffic against a running server while a test cuts a service away, and
the checks of what it got back.

Each worker is one visitor (its own session) sending one event at a time, each with its own
client-supplied id. An answer 503 is retried with the same id, as a well-behaved client does, so
every event ends up acknowledged once the service is back; anything else than 200 or 503 (with
``Retry-After``), and any answer slower than the bound, is recorded as a violation.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.sources import ServerSource

# A client that waits longer than this for one answer counts it as a hang.
CLIENT_TIMEOUT_S = 30.0
# The pause before sending a 503'd event again (shorter than Retry-After, to keep tests short).
RETRY_PAUSE_S = 0.1


@dataclass
class Answer:
    worker: int
    event_id: str
    status: int  # 0: no answer (the client timed out or the connection failed)
    seconds: float
    retry_after: str | None
    detail: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class Visitor:
    index: int
    session: str
    acknowledged: list[str] = field(default_factory=list)
    profile_id: str | None = None


@dataclass
class Traffic:
    """What the workers saw: every answer, and each visitor's acknowledged events."""

    run: str
    visitors: list[Visitor]
    answers: list[Answer] = field(default_factory=list)

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for answer in self.answers:
            counts[answer.status] = counts.get(answer.status, 0) + 1
        return counts

    def violations(self, bound_s: float) -> list[Answer]:
        """Answers a client must never get: not 200/503, a 503 without Retry-After, or one
        slower than ``bound_s``."""
        return [
            a
            for a in self.answers
            if a.status not in (200, 503)
            or (a.status == 503 and not a.retry_after)
            or a.seconds > bound_s
        ]

    def slowest(self) -> float:
        return max((a.seconds for a in self.answers), default=0.0)

    def stored_again(self) -> list[Answer]:
        """200 answers saying an event was already stored: a 503 came after its commit."""
        return [a for a in self.answers if any("already stored" in w for w in a.warnings)]

    def summary(self) -> str:
        unavailable = [a.seconds for a in self.answers if a.status == 503]
        return (
            f"{len(self.answers)} answers {self.statuses()}, slowest {self.slowest():.2f} s, "
            f"slowest 503 {max(unavailable, default=0):.2f} s, "
            f"acknowledged {sum(len(v.acknowledged) for v in self.visitors)}"
        )


class TrackLoad:
    """Workers sending ``/track`` until ``stop()`` (or ``each`` events); ``drain()`` waits
    until every worker's last event is acknowledged (or the time is up)."""

    def __init__(
        self,
        base_url: str,
        source: ServerSource,
        run: str,
        workers: int,
        *,
        each: int | None = None,
        retry_pause_s: float = RETRY_PAUSE_S,
    ) -> None:
        """``each``: events per worker at most (None: until ``stop()``). The events come from
        a server source (the operator's own system), which keeps the event ids it sends: the
        test counts them by those ids."""
        self._base_url = base_url
        self._source = source.id
        self._headers = source.headers
        self._each = each
        self._retry_pause_s = retry_pause_s
        self.traffic = Traffic(run, [Visitor(i, f"{run}-visitor-{i}") for i in range(workers)])
        self._sending = True
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # Idle connections are dropped by the client well before the server's keep-alive
        # timeout (uvicorn: 5 s) would close them under it: a request sent on a connection
        # the server is closing that very moment fails with no answer, which is the client's
        # race, not the server dropping a request.
        limits = httpx.Limits(max_connections=len(self.traffic.visitors) * 2, keepalive_expiry=2.0)
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            timeout=CLIENT_TIMEOUT_S,
            limits=limits,
            headers=self._headers,
        )
        self._tasks = [
            asyncio.create_task(self._work(visitor)) for visitor in self.traffic.visitors
        ]

    def stop(self) -> None:
        """Send no new event; what is being sent is retried until acknowledged."""
        self._sending = False

    async def drain(self, timeout_s: float) -> bool:
        """Whether every worker finished (its last event acknowledged) within ``timeout_s``."""
        done, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()
        assert self._client is not None
        await self._client.aclose()
        return not pending

    async def _work(self, visitor: Visitor) -> None:
        number = 0
        while self._sending and (self._each is None or number < self._each):
            event_id = f"{visitor.session}-e{number}"
            await self._until_acknowledged(visitor, event_id)
            number += 1

    async def _until_acknowledged(self, visitor: Visitor, event_id: str) -> None:
        while True:
            answer = await self._send(visitor, event_id)
            self.traffic.answers.append(answer)
            if answer.status == 200:
                visitor.acknowledged.append(event_id)
                return
            if answer.status not in (503, 0):
                return  # a violation, recorded; the event is given up
            await asyncio.sleep(self._retry_pause_s * random.uniform(0.5, 1.5))

    async def _send(self, visitor: Visitor, event_id: str) -> Answer:
        assert self._client is not None
        body = {
            "source": {"id": self._source},
            "session": {"id": visitor.session},
            "events": [
                {
                    "id": event_id,
                    "type": "page-view",
                    "properties": {"run": self.traffic.run, "visitor": visitor.index},
                }
            ],
        }
        started = time.monotonic()
        try:
            response = await self._client.post("/track", json=body)
        except httpx.HTTPError as exc:
            return Answer(visitor.index, event_id, 0, time.monotonic() - started, None, repr(exc))
        seconds = time.monotonic() - started
        try:
            payload: Any = response.json()
        except ValueError:
            payload = {"detail": response.text[:200]}
        warnings: list[str] = []
        if response.status_code == 200:
            visitor.profile_id = payload["profile"]["id"]
            warnings = list(payload.get("warnings") or [])
        return Answer(
            visitor.index,
            event_id,
            response.status_code,
            seconds,
            response.headers.get("retry-after"),
            str(payload.get("detail", ""))[:300] if isinstance(payload, dict) else "",
            warnings,
        )


@dataclass
class ApiProbe:
    """Management API requests made while the server is away: what they answered."""

    base_url: str
    token: str
    paths: list[tuple[str, str, dict[str, Any] | None]]  # method, path, JSON body
    answers: list[tuple[str, int, float, str | None]] = field(default_factory=list)

    async def run(self, until: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=CLIENT_TIMEOUT_S
        ) as client:
            while not until.is_set():
                for method, path, body in self.paths:
                    started = time.monotonic()
                    try:
                        response = await client.request(method, path, json=body)
                        status, retry_after = (
                            response.status_code,
                            response.headers.get("retry-after"),
                        )
                    except httpx.HTTPError:
                        status, retry_after = 0, None
                    self.answers.append((path, status, time.monotonic() - started, retry_after))
                await asyncio.sleep(0.2)

    def violations(self, bound_s: float) -> list[tuple[str, int, float, str | None]]:
        return [
            a
            for a in self.answers
            if a[1] not in (200, 503) or (a[1] == 503 and not a[3]) or a[2] > bound_s
        ]


async def run_with_outage(
    load: TrackLoad,
    *,
    cut: Callable[[], None],
    restore: Callable[[], None],
    before_s: float,
    during_s: float,
    after_s: float,
    drain_s: float,
    probe: ApiProbe | None = None,
) -> bool:
    """Traffic before, during and after an outage; whether every worker drained in time.
    ``probe`` asks the management API over and over while the server is away.

    ``cut`` and ``restore`` switch the relay (they block briefly, so they run in a thread)."""
    await load.start()
    await asyncio.sleep(before_s)
    await asyncio.to_thread(cut)
    back = asyncio.Event()
    probing = asyncio.create_task(probe.run(back)) if probe is not None else None
    await asyncio.sleep(during_s)
    back.set()
    if probing is not None:
        await probing
    await asyncio.to_thread(restore)
    await asyncio.sleep(after_s)
    load.stop()
    return await load.drain(drain_s)


def stored_events(admin: httpx.Client, run: str) -> dict[int, list[str]]:
    """The ids of the events stored for each visitor of one run (every copy, by search)."""
    stored: dict[int, list[str]] = {}
    cursor: str | None = None
    while True:
        body: dict[str, Any] = {"where": f"event@properties.run == '{run}'", "limit": 1000}
        if cursor:
            body["cursor"] = cursor
        answer = admin.post("/events/search", json=body)
        answer.raise_for_status()
        page = answer.json()
        for event in page["result"]:
            stored.setdefault(event["properties"]["visitor"], []).append(event["id"])
        cursor = page["next_cursor"]
        if not cursor or not page["result"]:
            return stored


def logged_problems(log: str, limit: int = 12) -> str:
    """The server log's distinct ERROR and WARNING lines (time stripped), most frequent first:
    to say in a failed assertion what the server saw."""
    counts: dict[str, int] = {}
    for line in log.splitlines():
        if " ERROR " in line or " WARNING " in line:
            text = line.split(" ", 2)[-1][:200]
            counts[text] = counts.get(text, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    return "\n".join(f"{count:5} {text}" for text, count in ranked)
