"""`tessera doctor`'s checks of the ingest queue: it answers and what waits in it, dead letters,
live workers, and the retention in force against TESSERA_QUEUE_RETENTION_HOURS / _MB. The
retention check FAILS when the broker's configuration could delete messages no worker processed
yet (a Kafka topic with a finite retention or compaction, a Pulsar topic in the shared
``public/default`` or with a TTL, an evicting backlog quota or a subscription expiration, a Redis
that evicts any key): the queue must keep what it acknowledged.

Read only: the queue is built as the workers build it but not started (starting creates the
topic, the subscription or the streams), except the embedded log when its file exists, which
has to be opened to be read.
"""

from __future__ import annotations

from typing import Any

from tessera.doctor.report import Bounds, Check, Status, failed, ok, warning
from tessera.errors import ConfigurationError
from tessera.model.common import DEFAULT_TENANT
from tessera.queue.embedded.queue import SqliteIngestQueue
from tessera.queue.ports import IngestQueue, QueueRetention
from tessera.settings import Settings
from tessera.storage.factory import Storage
from tessera.workers.queue_factory import build_queue, retention_of
from tessera.workers.status import queue_status

QUEUE = "queue"
DEAD_LETTERS = "dead letters"
WORKERS = "queue workers"
RETENTION = "queue retention"

# Pulsar holds the retention of acknowledged messages itself: `tessera install` sets it there
# and every process sees it. The embedded log, the Redis streams and the Kafka topic are trimmed
# by each worker process with the limits it was built with (Kafka's own retention must stay
# off), so for them nothing is "applied" and nothing can lag behind the settings.
BROKER_KEPT = frozenset({"pulsar"})
# Pulsar keeps whole minutes: values half a minute apart are the same retention.
_SAME_HOURS = 0.5 / 60


async def queue_checks(
    settings: Settings, storage: Storage, bounds: Bounds, *, configuration: Check
) -> list[Check]:
    """``configuration`` is the configuration store's check: dead letters and worker
    heartbeats are kept there."""
    try:
        queue = build_queue(settings, storage.redis_client)
    except ConfigurationError as error:
        return [failed(QUEUE, error.message)]
    where = queue_where(queue, settings)
    # The queue's clients give up after the publish timeout with a message of their own.
    seconds = max(bounds.seconds, settings.queue_publish_timeout_seconds + 1)
    try:
        retention = await bounds.check(
            RETENTION, where, _retention(queue, settings), seconds=seconds
        )
        if isinstance(queue, SqliteIngestQueue) and not queue.path.exists():
            found = warning(
                QUEUE, f"{where}: not there yet; `tessera install` or the first start creates it"
            )
        else:
            found = await bounds.check(QUEUE, where, _backlog(queue, where), seconds=seconds)
        if found.status is Status.FAILED and _no_topic_perhaps(queue, retention):
            hint = "; the topic may not exist yet (`tessera install` creates it)"
            found = Check(found.name, found.status, found.detail + hint, found.facts)
        checks = [found]
        if configuration.status is Status.OK:
            checks.append(await bounds.check(DEAD_LETTERS, where, _dead_letters(storage)))
            checks.append(await bounds.check(WORKERS, where, _workers(settings, storage)))
        else:
            why = "not checked: they are kept in the configuration store, which is not ready"
            checks += [
                Check(DEAD_LETTERS, configuration.status, why),
                Check(WORKERS, configuration.status, why),
            ]
        checks.append(retention)
    finally:
        await bounds.quietly(queue.close())
    return checks


def _no_topic_perhaps(queue: IngestQueue, retention: Check) -> bool:
    """A broker that answered the retention read (with none, for Pulsar) may lack the topic
    itself, which reading the backlog of does not say (Kafka waits for its metadata until it
    gives up)."""
    if retention.status is Status.FAILED:
        return False
    if queue.backend == "kafka":
        return True
    return queue.backend in BROKER_KEPT and retention.facts.get("applied") is None


def queue_where(queue: IngestQueue, settings: Settings) -> str:
    if isinstance(queue, SqliteIngestQueue):
        return f"embedded log {queue.path}"
    topic = settings.queue_topic
    if queue.backend == "redis":
        return f"Redis streams {topic!r} on REDIS_HOST={settings.redis_host}:{settings.redis_port}"
    if queue.backend == "kafka":
        return f"kafka topic {topic} at KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}"
    if queue.backend == "pulsar":
        name = f"{settings.pulsar_namespace}/{topic}"
        return f"pulsar topic {name} at PULSAR_HOST={settings.pulsar_host}"
    return f"{queue.backend} queue {topic}"


async def _backlog(queue: IngestQueue, where: str) -> Check:
    if isinstance(queue, SqliteIngestQueue):
        await queue.start()  # opens the log file, which exists
    status = await queue.status()
    partitions = [
        {"partition": p.partition, "lag": p.backlog, "owner": p.owner}
        for p in sorted(status.partitions, key=lambda p: p.partition)
    ]
    return ok(
        QUEUE,
        f"{where}: reachable, backlog {status.backlog} over {len(partitions)} partition(s)",
        backend=status.backend,
        topic=status.topic,
        backlog=status.backlog,
        partitions=partitions,
    )


async def _dead_letters(storage: Storage) -> Check:
    count = await storage.dead_letters.count(DEFAULT_TENANT)
    if count:
        return warning(
            DEAD_LETTERS,
            f"{count} message(s) the workers gave up on: `tessera queue dead-letters list`, "
            "then replay or drop them",
            count=count,
        )
    return ok(DEAD_LETTERS, "none", count=0)


async def _workers(settings: Settings, storage: Storage) -> Check:
    # queue_status decides which heartbeats are recent enough to count as a live worker.
    status = await queue_status(
        mode=settings.ingest_mode,
        queue=None,
        dead_letters=storage.dead_letters,
        beats=storage.worker_beats,
        tenant=DEFAULT_TENANT,
    )
    workers: list[dict[str, Any]] = status["workers"]
    facts = {"live": len(workers), "messages_per_second": status["messages_per_second"]}
    if workers:
        names = ", ".join(f"{w['id']} ({w['host']} pid {w['pid']})" for w in workers)
        return ok(
            WORKERS,
            f"{len(workers)} live: {names}; {status['messages_per_second']} messages/s",
            **facts,
        )
    if settings.ingest_mode == "async":
        return warning(
            WORKERS,
            "no live worker in async mode: queued requests wait until one runs (`tessera worker`,"
            " or TESSERA_WORKERS of at least 1 for `tessera serve`)",
            **facts,
        )
    return ok(WORKERS, "none live; sync mode runs the pipeline in the request", **facts)


async def _retention(queue: IngestQueue, settings: Settings) -> Check:
    wanted = retention_of(settings)
    found = await queue.read_retention()
    risks = await queue.retention_risks()
    facts = {
        "applied": _facts(found),
        "settings": _facts(wanted),
        "max_backlog_mb": settings.queue_max_backlog_mb,
        "risks": risks,
    }
    holder = _holder(queue, settings)
    if risks:
        return failed(
            RETENTION,
            "could delete messages no worker processed yet: " + "; ".join(risks),
            **facts,
        )
    if queue.backend in BROKER_KEPT:
        if found is None:
            return warning(
                RETENTION,
                f"the broker reports no retention for {holder} (none set, or unlimited); the "
                f"settings say {_text(wanted)}: run `tessera install`",
                **facts,
            )
        if not same_retention(found, wanted):
            return warning(
                RETENTION,
                f"{holder} keeps {_text(found)}, the settings say {_text(wanted)}: run "
                "`tessera install` to apply them",
                **facts,
            )
        return ok(RETENTION, f"{holder} keeps {_text(found)}, as the settings say", **facts)
    if found is None or not same_retention(found, wanted):
        return warning(
            RETENTION,
            f"the workers trim {holder} by {_text(found)}, not by the settings' {_text(wanted)}",
            **facts,
        )
    return ok(
        RETENTION,
        f"the workers trim acknowledged messages of {holder} past {_text(found)}, as the "
        "settings say (no install needed)",
        **facts,
    )


def same_retention(found: QueueRetention, wanted: QueueRetention) -> bool:
    return found.megabytes == wanted.megabytes and abs(found.hours - wanted.hours) <= _SAME_HOURS


def _holder(queue: IngestQueue, settings: Settings) -> str:
    if queue.backend == "kafka":
        return f"kafka topic {settings.queue_topic}"
    if queue.backend == "pulsar":
        return f"pulsar namespace {settings.pulsar_namespace}"
    if queue.backend == "redis":
        return f"the Redis streams {settings.queue_topic!r}"
    return "the embedded log"


def _text(retention: QueueRetention | None) -> str:
    if retention is None:
        return "no limit"
    return f"{retention.hours:g} h / {retention.megabytes} MB"


def _facts(retention: QueueRetention | None) -> dict[str, float | int] | None:
    if retention is None:
        return None
    return {"hours": retention.hours, "megabytes": retention.megabytes}
