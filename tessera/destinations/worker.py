"""Delivering outbox messages to their destinations, in the background.

``DeliveryWorker`` is one asyncio task per process. Each round it claims as many due messages
as it has free sending slots (``concurrency``), each under a lease so that another worker or
process cannot send the same message meanwhile, and sends each one in its own task. It sleeps
``poll_interval_s`` between rounds, or less: ``wake()`` (called when messages are queued or
replayed, and when a send finishes) starts the next round at once.

Every attempt is recorded. A 2xx answer delivers the message; anything else (another status,
no answer, a timeout) tries again after an exponential backoff with jitter, ``backoff_base_s``
doubling per attempt up to ``backoff_max_s``, until the destination's ``max_attempts``: then
the message is dead (a dead letter, replayable over the API). A message whose destination was
deleted or disabled is dead at once, so pausing a destination does not keep its messages
spinning; replay them once it is enabled again. So is one whose address the request-forgery
policy refuses (tessera/outbound/): it would be refused at every attempt.

The loop never raises: a failing round or send is logged and the loop goes on (a message whose
send failed that way keeps its lease, which runs out, and is tried again). Secret headers are
sent but never logged, and neither are bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import httpx
import msgspec

from tessera import __version__
from tessera.core.backoff import backoff_delay
from tessera.errors import StorageUnavailable
from tessera.model.common import utcnow
from tessera.model.destination import DeliveryAttempt, DeliveryOutcome, Destination, OutboxMessage
from tessera.outbound.policy import OutboundRefused
from tessera.storage.automation_ports import DocumentStore, OutboxStore

log = logging.getLogger(__name__)

# A claimed message is someone else's after this long; longer than the largest timeout a
# destination may have (60 s, see the API) plus the time to record the attempt.
DEFAULT_LEASE_S = 120.0
# How long stop() lets sends in progress finish before it cancels them.
DEFAULT_STOP_GRACE_S = 5.0
# How much of an error answer's body is kept with the attempt: enough to see why.
ERROR_BODY_BYTES = 300

_encode = msgspec.json.Encoder().encode


class DeliveryWorker:
    def __init__(
        self,
        outbox: OutboxStore,
        destinations: DocumentStore[Destination],
        http: httpx.AsyncClient,
        *,
        poll_interval_s: float,
        backoff_base_s: float,
        backoff_max_s: float,
        concurrency: int,
        lease_s: float = DEFAULT_LEASE_S,
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
    ) -> None:
        self._outbox = outbox
        self._destinations = destinations
        self._http = http
        self._poll_interval_s = poll_interval_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._concurrency = max(1, concurrency)
        self._lease_s = lease_s
        self._stop_grace_s = stop_grace_s
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    def wake(self) -> None:
        """Start the next round now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._loop_task = asyncio.create_task(self._run(), name="tessera-delivery")

    async def stop(self) -> None:
        """Claim nothing more; let sends in progress finish (up to the grace time), then cancel
        the rest: their leases run out and they are sent again later."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        if self._sending:
            _done, late = await asyncio.wait(set(self._sending), timeout=self._stop_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self._concurrency - len(self._sending)
            claimed = 0
            if free > 0:
                try:
                    claimed = await self._claim_and_send(free)
                except StorageUnavailable as exc:  # an outage: expected, not a defect
                    log.warning("delivery: claiming due messages waits: %s", exc.message)
                except Exception:
                    log.exception("delivery: claiming due messages failed; trying again later")
            # A full round means more may be due: go on at once while slots are free.
            if claimed and claimed == free and len(self._sending) < self._concurrency:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)

    async def _claim_and_send(self, limit: int) -> int:
        messages = await self._outbox.claim_due(utcnow(), limit=limit, lease_s=self._lease_s)
        for message in messages:
            task = asyncio.create_task(self._deliver_logged(message))
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return len(messages)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wake.set()  # a slot is free

    async def _deliver_logged(self, message: OutboxMessage) -> None:
        try:
            await self.deliver(message)
        except Exception:
            log.exception(
                "delivery: message %s to destination %s failed unexpectedly; its lease will "
                "run out and it is tried again",
                message.id,
                message.destination_id,
            )

    async def deliver(self, message: OutboxMessage) -> DeliveryOutcome:
        """One attempt at a claimed message, recorded with its outcome."""
        number = message.attempts + 1
        destination = await self._destinations.get(message.tenant, message.destination_id)
        if destination is None or not destination.enabled:
            reason = "was deleted" if destination is None else "is disabled"
            attempt = DeliveryAttempt(
                tenant=message.tenant,
                message_id=message.id,
                number=number,
                time=utcnow(),
                error=f"the destination {reason}; not sent",
            )
            return await self._record(message, attempt, DeliveryOutcome(state="dead"))
        attempt, refused = await self._send(message, destination, number)
        if attempt.status is not None and 200 <= attempt.status < 300:
            outcome = DeliveryOutcome(state="delivered")
        elif refused or number >= destination.max_attempts:
            # A refusal of the request-forgery policy would come again at every attempt.
            outcome = DeliveryOutcome(state="dead")
        else:
            delay = backoff_delay(number, self._backoff_base_s, self._backoff_max_s)
            outcome = DeliveryOutcome(state="pending", due=utcnow() + timedelta(seconds=delay))
        if outcome.state != "delivered":
            log.warning(
                "delivery: message %s to destination %s, attempt %d: %s (%s)",
                message.id,
                destination.id,
                number,
                attempt.error,
                "dead letter" if outcome.state == "dead" else "will retry",
            )
        return await self._record(message, attempt, outcome)

    async def _record(
        self, message: OutboxMessage, attempt: DeliveryAttempt, outcome: DeliveryOutcome
    ) -> DeliveryOutcome:
        if not await self._outbox.record_attempt(message, attempt, outcome):
            log.info("delivery: message %s was taken over by another worker", message.id)
        return outcome

    async def _send(
        self, message: OutboxMessage, destination: Destination, number: int
    ) -> tuple[DeliveryAttempt, bool]:
        """The attempt, and whether the outbound policy refused the destination's address."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"Tessera/{__version__}",
            **destination.headers,
            **destination.secret_headers,
            # Delivery is at least once: receivers drop a message id they already have, so no
            # configured header may replace it.
            "X-Tessera-Message-Id": message.id,
        }
        status: int | None = None
        error: str | None = None
        refused = False
        at = utcnow()
        started = time.perf_counter()
        try:
            # httpx's timeout bounds each phase; this bounds the whole exchange.
            async with (
                asyncio.timeout(destination.timeout_s),
                self._http.stream(
                    destination.method,
                    destination.url,
                    content=_encode(message.body),
                    headers=headers,
                    timeout=destination.timeout_s,
                ) as response,
            ):
                status = response.status_code
                if not 200 <= status < 300:
                    start = await _first_bytes(response)
                    error = f"HTTP {status}: {start}" if start else f"HTTP {status}"
        except TimeoutError:
            error = f"no complete answer within {destination.timeout_s:g} s"
        except OutboundRefused as exc:
            error, refused = str(exc), True
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        attempt = DeliveryAttempt(
            tenant=message.tenant,
            message_id=message.id,
            number=number,
            time=at,
            status=status,
            error=error,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        return attempt, refused


async def _first_bytes(response: httpx.Response) -> str:
    """The start of an error answer's body; the rest is not read."""
    kept = b""
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= ERROR_BODY_BYTES:
            break
    return kept[:ERROR_BODY_BYTES].decode("utf-8", errors="replace").strip()
