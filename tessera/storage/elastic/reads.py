"""Reads that are whole, or fail: the one way the stores and the writer read Elasticsearch.

Tessera decides on what it reads: where a profile lives, whether an event is stored, what a
profile holds before an event changes it. A read that silently missed part of the data is
worse than no read: the writer then stores a fresh, empty copy of a profile it did not find,
and the next write deletes the real one as a stray. Elasticsearch makes such reads easy:
`ignore_unavailable=true` leaves closed indices out without a word, and a shard that cannot
be read only shows in `_shards.failed` of an answer that is otherwise a 200. So every read
made through this module:

- names the tenant's alias (or a single index) without `ignore_unavailable`: a closed index
  behind the alias makes Elasticsearch refuse the search (400 `index_closed_exception`), which
  is a StorageUnavailable (503, retry) here;
- asks with `allow_partial_search_results=false` and checks `_shards` of the answer anyway
  (`ensure_complete`): every shard answered (`successful == total`) and none failed. A
  *skipped* shard counts as successful in Elasticsearch's numbers and that is right: it is
  skipped only when Elasticsearch proved from the index metadata that it holds no match;
- takes "the alias does not exist" (a 404 naming the alias itself) as "nothing stored yet": a
  tenant's alias comes with its first partition. A 404 naming anything else (an index deleted
  between the alias' resolution and the read: retention, a reshard's swap) is retried and
  then a 503, never "nothing";
- tries again, for READ_RETRY_BUDGET_S, what may pass at once (no answer, 429, 5xx: among
  them the 503 of a partition created a moment ago whose primary shards are not started yet,
  see docs/distributed.md); a shard that stays unavailable (a red index) is a 503 after that;
- takes any other 4xx as Elasticsearch refusing the request itself: StorageRefused (500), not
  "retry later", since a retry gets the same answer.

Documents fetched by id from single indices (mget) are checked too (`found_documents`): a
document whose shard could not be read is an error entry in the answer, not "not found"; a
multi-get that checks its answer inside `attempt` tries that again like a 503 (the shard
may be starting).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, ParamSpec, TypeVar

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from tessera.errors import StorageRefused, StorageUnavailable, TesseraError
from tessera.storage.elastic.bulk import IncompleteRead, Retrier, is_retryable

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Answer = dict[str, Any]

# How long a read keeps trying what may pass at once (a shard starting, a node restarting).
# Short: a request waits this long at most before its 503, on top of the client's timeout.
READ_RETRY_BUDGET_S: Final = 1.0
PIT_KEEP_ALIVE: Final = "1m"
# Status codes that describe the cluster, not the request: unauthorised or blocked (403 is
# also a read block), gone, timed out, conflicting, overloaded.
_CLUSTER_STATUSES: Final = frozenset({401, 403, 404, 408, 409, 429})
# 400s that describe an index, not the request.
_UNAVAILABLE_TYPES: Final = frozenset({"index_closed_exception"})


def read_error(exc: TransportError | ApiError, what: str) -> TesseraError:
    """What a failed read means for the caller: retry later (503), or a refused request."""
    if isinstance(exc, ApiError) and _refused(exc):
        log.error("Elasticsearch refused %s: %s", what, explain(exc))
        return StorageRefused(f"Elasticsearch refused {what}: {explain(exc)}")
    return StorageUnavailable(
        f"Elasticsearch (ELASTIC_HOST) could not be read ({what}): {explain(exc)}"
    )


def _refused(exc: ApiError) -> bool:
    status = exc.meta.status
    if status >= 500 or status in _CLUSTER_STATUSES:
        return False
    return error_type(exc) not in _UNAVAILABLE_TYPES


def reads_elastic(
    read: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """A store's read whose Elasticsearch errors become read_error's answer: a cluster that
    cannot be reached (down, overloaded, an index closed) is a 503, never a 500."""
    what = f"reading ({read.__qualname__})"

    @functools.wraps(read)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await read(*args, **kwargs)
        except (TransportError, ApiError) as exc:
            raise read_error(exc, what) from exc

    return guarded


async def complete_search(
    client: AsyncElasticsearch,
    what: str,
    *,
    index: str | None = None,
    retrier: Retrier | None = None,
    **request: Any,
) -> Answer:
    """The answer of one search, from every shard it needed; `index` None for a search in a
    point in time. Nothing stored yet under `index` answers no hits (see the module)."""

    async def once() -> Answer:
        try:
            answer = await client.search(index=index, allow_partial_search_results=False, **request)
        except NotFoundError as exc:
            if index is not None and never_created(exc, index):
                return _no_hits()
            raise
        body: Answer = answer.body
        return body

    answer = await attempt(what, retrier, once)
    ensure_complete(answer, what)
    return answer


async def complete_refresh(client: AsyncElasticsearch, index: str) -> None:
    """Make every write acknowledged so far searchable in `index` (an alias): a refresh that
    reached every shard, or a StorageUnavailable. Nothing stored there yet needs none."""

    async def once() -> Answer:
        try:
            answer = await client.indices.refresh(index=index)
        except NotFoundError as exc:
            if never_created(exc, index):
                return {}
            raise
        body: Answer = answer.body
        return body

    answer = await attempt(f"refreshing {index}", None, once)
    ensure_complete(answer, f"refreshing {index}")


def ensure_complete(answer: Mapping[str, Any], what: str) -> None:
    """Raise IncompleteRead unless every shard the search needed answered."""
    shards = answer.get("_shards")
    if shards is None:
        return
    total = int(shards.get("total", 0))
    successful = int(shards.get("successful", 0))
    failed = int(shards.get("failed", 0))
    if not failed and successful >= total and not answer.get("timed_out"):
        return
    failures = shards.get("failures") or [{}]
    first = failures[0]
    reason = (first.get("reason") or {}).get("type") or "timed out"
    raise IncompleteRead(
        f"Elasticsearch: {what}: {total - successful} of {total} shards did not answer "
        f"({first.get('index', '?')}: {reason}); nothing is decided on a partial read"
    )


def found_documents(answer: Mapping[str, Any], what: str) -> list[Answer]:
    """The documents an mget found; IncompleteRead when one of them could not be read."""
    documents: list[Answer] = answer.get("docs") or []
    for doc in documents:
        error = doc.get("error")
        if error is not None:
            kind = error.get("type", "error") if isinstance(error, dict) else str(error)
            if kind == "index_not_found_exception":
                continue  # the single index does not exist yet: nothing stored there
            raise IncompleteRead(
                f"Elasticsearch: {what}: document {doc.get('_id')!r} in {doc.get('_index')} "
                f"could not be read ({kind})"
            )
    return [doc for doc in documents if doc.get("found")]


def never_created(exc: NotFoundError, index: str) -> bool:
    """The 404 says `index` (the alias or single index read) does not exist at all."""
    error = _error_body(exc)
    return error.get("type") == "index_not_found_exception" and error.get("index") == index


class PointInTime:
    """One point in time over an alias: every search in it sees the same snapshot."""

    def __init__(self, client: AsyncElasticsearch, pit_id: str, what: str) -> None:
        self._client = client
        self.id = pit_id
        self._what = what

    async def search(self, **request: Any) -> Answer:
        answer = await complete_search(
            self._client, self._what, pit={"id": self.id, "keep_alive": PIT_KEEP_ALIVE}, **request
        )
        # Elasticsearch may hand out a new id with every answer: always search with the last.
        self.id = answer.get("pit_id", self.id)
        return answer


@asynccontextmanager
async def point_in_time(
    client: AsyncElasticsearch, index: str, what: str
) -> AsyncIterator[PointInTime | None]:
    """A point in time over `index`, closed on exit; None when nothing was stored there yet."""

    async def once() -> Answer | None:
        try:
            opened = await client.open_point_in_time(index=index, keep_alive=PIT_KEEP_ALIVE)
        except NotFoundError as exc:
            if never_created(exc, index):
                return None
            raise
        body: Answer = opened.body
        return body

    opened = await attempt(what, None, once)
    if opened is None:
        yield None
        return
    ensure_complete(opened, what)
    pit = PointInTime(client, opened["id"], what)
    try:
        yield pit
    finally:
        try:
            await client.close_point_in_time(id=pit.id)
        except (TransportError, ApiError) as exc:
            # It lapses by itself after PIT_KEEP_ALIVE; the read's own outcome stands.
            log.warning("Elasticsearch: could not close a point in time: %s", explain(exc))


async def attempt(what: str, retrier: Retrier | None, once: Callable[[], Awaitable[T]]) -> T:
    """`once()`, again while what failed may pass at once and the retrier has time left.
    An IncompleteRead `once` raises may pass too: a multi-get answers a shard that is not
    started yet (a partition created a moment ago) with an error entry, not a 503."""
    retrier = retrier or Retrier(READ_RETRY_BUDGET_S)
    while True:
        try:
            return await once()
        except (TransportError, ApiError) as exc:
            if _may_pass(exc) and retrier.time_left():
                log.info("Elasticsearch: %s failed (%s); trying again", what, explain(exc))
                await retrier.pause()
                continue
            raise read_error(exc, what) from exc
        except IncompleteRead as exc:
            if not retrier.time_left():
                raise
            log.info("%s; trying again", exc)
            await retrier.pause()


def _may_pass(exc: TransportError | ApiError) -> bool:
    # Beside is_retryable's: an index that vanished under a search (the alias moved on).
    vanished = isinstance(exc, NotFoundError) and error_type(exc) == "index_not_found_exception"
    # A search that ran out of its time (504) would only run out of it again.
    timed_out = isinstance(exc, ApiError) and exc.meta.status == 504
    return vanished or (is_retryable(exc) and not timed_out)


def _no_hits() -> Answer:
    return {"hits": {"total": {"value": 0, "relation": "eq"}, "hits": []}}


def _error_body(exc: ApiError) -> Mapping[str, Any]:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def error_type(exc: ApiError) -> str:
    return str(_error_body(exc).get("type", ""))


def explain(exc: BaseException) -> str:
    """Status, error type, reason and index of a failed request, for messages."""
    if not isinstance(exc, ApiError):
        return f"{type(exc).__name__}: {exc}"
    error = _error_body(exc)
    parts = [str(exc.meta.status), str(error.get("type") or exc.message)]
    cause = error.get("caused_by")
    reason = error.get("reason") or (cause.get("reason") if isinstance(cause, dict) else None)
    if reason:
        parts.append(str(reason)[:300])
    if error.get("index"):
        parts.append(f"index {error['index']}")
    return " ".join(parts)
