"""One batch of writes as Elasticsearch bulk requests, retried until stored or refused.

Each operation remembers which caller it belongs to (`owner`), so an item Elasticsearch
refuses fails that caller alone. What each item answer means:

- 2xx: stored (or deleted).
- 409 on `create`: an event with that id is in that index already; events are insert-once
  and the first one stays, so this is the expected outcome, not a failure.
- 404 on `delete`: nothing to delete; the wanted state holds.
- 409 `version_conflict_engine_exception` on a versioned `index` or `delete` (`version`, with
  `version_type=external_gte`: the fencing token of the writer's lock): a later holder of the
  record's lock has written it already, so this writer lost its lock (it stalled, or this is
  a retry of a request that gave up). Sending it again cannot help, and neither is the record
  wrong: the owner fails (StorageUnavailable; its retry reads the record again under a fresh
  lock), and is not reported in `refused`.
- 429 and 5xx: Elasticsearch is overloaded or a shard is moving. Retried with backoff, as is
  a request that got no answer at all (connection refused, timeout). When an item of a
  document is retried, so are the later operations of the same batch on that document, in
  their order: a retried delete must not land after a later write of the same document.
- 403 `cluster_block_exception`: the index is write-blocked because a reshard is moving it
  (reshard.py). A delete marked `blocked_ok` (a stray copy in a generation being left: the
  reshard removes the whole index) counts as done; any other such item fails its caller and
  is reported in `blocked`, so the writer can plan the batch again with fresh generations.
- anything else (400 mapping errors, …): that caller's change set cannot be stored, and never
  will be as it is: the owner is reported in `refused` (the writer answers RecordRejected, which
  a queue worker dead-letters instead of retrying forever).

No item is dropped silently: every owner is either stored or named in the answer's failures,
and after `retry_budget_s` of failing attempts the remaining ones fail as well.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, AsyncElasticsearch

from tessera.errors import StorageUnavailable
from tessera.storage.elastic.wire import ElasticWire

log = logging.getLogger(__name__)

Action = Literal["create", "index", "delete"]
# "false" only for writes nobody reads before an explicit refresh (reshard.py's copies).
Refresh = Literal["true", "wait_for", "false"]
T = TypeVar("T")

FIRST_BACKOFF_S = 0.05
LONGEST_BACKOFF_S = 1.0
# A bulk body past this size goes out in several requests (http.max_content_length is 100 MB).
MAX_BULK_BYTES = 16 * 1024 * 1024
# Only what _classify reads comes back: the answer to a 500-record bulk stays small.
ANSWER_PARTS = ["errors", "items.*.status", "items.*.error.type", "items.*.error.reason"]

_encode = msgspec.json.Encoder().encode
# The error type of a write into a write-blocked index.
BLOCKED = "cluster_block_exception"
# Error types of an item that say the index cannot be written now, not what the record is.
UNAVAILABLE = frozenset({"index_closed_exception"})
# The error type of a write whose version is below the stored document's.
VERSION_CONFLICT = "version_conflict_engine_exception"


@dataclass(slots=True)
class Operation:
    owner: int
    action: Action
    index: str
    doc_id: str
    source: bytes | None = None
    # A refusal by a write block means "done" (see the module docstring).
    blocked_ok: bool = False
    # Written only over a document of this version or a lower one (`external_gte`: the same
    # lock holder may write a record twice); None: whatever is stored.
    version: int | None = None

    def lines(self) -> bytes:
        head = _head(self.action, self.index, self.doc_id, self.version)
        if self.source is None:
            return head
        return head + self.source + b"\n"


def _head(action: str, index: str, doc_id: str, version: int | None) -> bytes:
    meta: dict[str, str | int] = {"_index": index, "_id": doc_id}
    if version is not None:
        meta["version"] = version
        meta["version_type"] = "external_gte"
    return _encode({action: meta}) + b"\n"


class PartitionMoving(StorageUnavailable):
    """A write reached a partition a reshard is moving (or has moved): plan it again."""


def is_retryable(exc: BaseException) -> bool:
    """A request that may succeed when sent again: no answer, overload, or a server error."""
    if isinstance(exc, TransportConnectionError | ConnectionTimeout):
        return True
    if isinstance(exc, ApiError):
        return exc.meta.status == 429 or exc.meta.status >= 500
    return False


class IncompleteRead(StorageUnavailable):
    """Part of what a read needed could not be read (a failed shard, a document's shard): it
    may pass, so a Retrier tries again while it has time (reads.py raises it)."""


class Retrier:
    """Calls again what failed for a retryable reason, with growing pauses, until a deadline."""

    def __init__(self, budget_s: float) -> None:
        self._deadline = time.monotonic() + budget_s
        self._pause = FIRST_BACKOFF_S

    def time_left(self) -> bool:
        return time.monotonic() + self._pause < self._deadline

    async def pause(self) -> None:
        await asyncio.sleep(self._pause)
        self._pause = min(self._pause * 2, LONGEST_BACKOFF_S)

    async def call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                return await call()
            except (TransportError, ApiError) as exc:
                if not is_retryable(exc) or not self.time_left():
                    message = f"Elasticsearch: {what} failed: {describe(exc)}"
                    raise StorageUnavailable(message) from exc
                log.warning("Elasticsearch: %s failed (%s); retrying", what, describe(exc))
                await self.pause()
            except IncompleteRead as exc:
                # A shard that was not started yet (an index created a moment ago, the
                # generations' by a first reshard) or that is recovering.
                if not self.time_left():
                    raise
                log.warning("%s; retrying", exc)
                await self.pause()


async def send(
    client: AsyncElasticsearch,
    operations: Sequence[Operation],
    *,
    refresh: Refresh,
    retrier: Retrier,
    blocked: set[int] | None = None,
    refused: set[int] | None = None,
    wire: ElasticWire | None = None,
) -> dict[int, str]:
    """Store the operations; the owners whose operations were refused, with the reason.
    Sent over ``wire`` when given (the writer's lean connections, wire.py), else the client.

    Owners refused by a write block are also added to `blocked`, when given; owners refused
    for what their documents are (a 4xx other than a block or 429: sending them again cannot
    help) to `refused`. The other failures may pass (no answer, overload, out of budget)."""
    failures: dict[int, str] = {}
    if blocked is None:
        blocked = set()
    if refused is None:
        refused = set()
    todo = list(operations)
    while todo:
        retry: list[Operation] = []
        chunks = deque(_chunks(todo))
        while chunks:
            chunk = chunks.popleft()
            body = b"".join(op.lines() for op in chunk)
            try:
                answer = await _bulk(client, wire, body, refresh)
            except (TransportError, ApiError) as exc:
                if is_retryable(exc):
                    retry.extend(chunk)
                    log.warning("Elasticsearch bulk failed (%s); retrying", describe(exc))
                    continue
                owners = list(dict.fromkeys(op.owner for op in chunk))
                if len(owners) > 1:
                    # The request as a whole was refused (a validation error of one item
                    # fails them all): one caller's operations at a time find the culprit.
                    chunks.extendleft(
                        reversed([[op for op in chunk if op.owner == o] for o in owners])
                    )
                    continue
                failures.setdefault(owners[0], describe(exc))
                if isinstance(exc, ApiError) and 400 <= exc.meta.status < 500:
                    refused.add(owners[0])
                continue
            if answer.get("errors"):
                retry.extend(_classify(chunk, answer["items"], failures, blocked, refused))
        if not retry:
            break
        again = _with_later_operations(todo, retry)
        if not retrier.time_left():
            for op in again:
                failures.setdefault(op.owner, "Elasticsearch kept refusing the write (retried)")
            break
        await retrier.pause()
        todo = again
    return failures


async def _bulk(
    client: AsyncElasticsearch, wire: ElasticWire | None, body: bytes, refresh: Refresh
) -> Mapping[str, Any]:
    if wire is not None:
        return await wire.bulk(body, refresh=refresh, filter_path=ANSWER_PARTS)
    answer = await client.bulk(
        # Already NDJSON: the client's serializer passes bytes through as they are.
        operations=body,  # type: ignore[arg-type]
        refresh=refresh,
        filter_path=ANSWER_PARTS,
    )
    found: Mapping[str, Any] = answer.body
    return found


def _classify(
    chunk: Sequence[Operation],
    items: Sequence[dict[str, Any]],
    failures: dict[int, str],
    blocked: set[int] | None = None,
    refused: set[int] | None = None,
) -> list[Operation]:
    """Note refused owners in `failures` (and in `blocked`, those a write block refused, in
    `refused` those refused for what they are); return the operations to send again."""
    retry: list[Operation] = []
    for op, item in zip(chunk, items, strict=True):
        answer = item[op.action]
        status = int(answer.get("status", 500))
        if status < 300:
            continue
        if (op.action == "create" and status == 409) or (op.action == "delete" and status == 404):
            continue
        if status == 429 or status >= 500:
            retry.append(op)
            continue
        error = answer.get("error") or {}
        reason = f"{status} {error.get('type', '')}: {error.get('reason', '')}".strip()
        if status == 409 and error.get("type") == VERSION_CONFLICT:
            log.warning(
                "Elasticsearch kept a newer %s/%s: this writer lost its lock", op.index, op.doc_id
            )
            failures.setdefault(op.owner, f"{reason} (a later holder of its lock wrote it; retry)")
            continue
        if error.get("type") in UNAVAILABLE:
            # The index is there but cannot take writes now (closed): an outage of that
            # partition, not a record that can never be stored.
            failures.setdefault(op.owner, reason)
            continue
        if status == 403 and error.get("type") == BLOCKED:
            if not op.blocked_ok:
                if blocked is not None:
                    blocked.add(op.owner)
                failures.setdefault(op.owner, reason)
            continue
        log.error("Elasticsearch refused %s %s/%s: %s", op.action, op.index, op.doc_id, reason)
        failures.setdefault(op.owner, reason)
        if refused is not None:
            refused.add(op.owner)
    return retry


def _with_later_operations(
    todo: Sequence[Operation], failed: Sequence[Operation]
) -> list[Operation]:
    """The failed operations and, after each, the later ones on the same document."""
    failed_ids = {id(op) for op in failed}
    reopened: set[tuple[str, str]] = set()
    again: list[Operation] = []
    for op in todo:
        key = (op.index, op.doc_id)
        if id(op) in failed_ids:
            reopened.add(key)
            again.append(op)
        elif key in reopened:
            again.append(op)
    return again


def _chunks(operations: Sequence[Operation]) -> list[list[Operation]]:
    chunks: list[list[Operation]] = [[]]
    size = 0
    for op in operations:
        length = len(op.source or b"") + 128
        if chunks[-1] and size + length > MAX_BULK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(op)
        size += length
    return [chunk for chunk in chunks if chunk]


def describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.meta.status} {exc.message}"
    return f"{type(exc).__name__}: {exc}"
