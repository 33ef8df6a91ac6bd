"""The ingest queue on Apache Pulsar.

- Topic: ``persistent://{namespace}/{topic}``, partitioned, made by ``start()`` through the admin
  REST API together with the subscription ``{topic}-workers``, created at the earliest position
  so the backlog counts every message published since.
- Routing: the producer's own router hashes ``partition_key`` with the C++ client's default
  (Boost) hash, which the Python client cannot change and which Java clients do not share. A
  custom router sends each message to ``partition_of(key)`` (CRC-32, the embedded and Redis
  backends' function) instead: the same key lands on the same partition from every process,
  client version and language that applies the same formula.
- Batching is off: without batch-index acknowledgements on the broker a batch is acknowledged as
  one entry, so one unacknowledged message would bring its acknowledged neighbours back. With
  one entry per message, ``position = ledger_id << 32 | entry_id`` grows with publish order
  within a partition (ledger ids only grow; a ledger's entry ids count from 0).
- Consumers: Failover subscription, so each partition has one active consumer (per-key order)
  and unacknowledged messages go to the next active consumer when one closes or its connection
  dies. Failover subscriptions keep no redelivery count, so ``redelivered`` stays False.
- Keeping what was acknowledged: Pulsar keeps a subscription's unacknowledged messages unless a
  message TTL, a ``consumer_backlog_eviction`` backlog quota or a subscription expiration drops
  them. The topic lives in a namespace of Tessera's own (``public/tessera`` by default; never the
  shared ``public/default``, whose policies other applications rely on), where
  ``apply_retention`` sets the retention of acknowledged messages, no TTL, no subscription
  expiration, and a backlog quota of ``max_backlog_mb`` (per partition: divided by the
  partitions) with ``producer_exception``: a full backlog refuses the producer, never evicts.
  The broker checks that quota only every ``backlogQuotaCheckIntervalInSeconds``, so the
  publisher also measures the backlog itself (``queue_backlog.BacklogGate``, from the topic's
  stats every second in the background) and refuses with QueueFull first.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import math
from typing import Any
from urllib.parse import quote

import httpx
import pulsar  # type: ignore[import-untyped]

from tessera.errors import ConfigurationError
from tessera.queue.backlog import Backlog, BacklogGate
from tessera.queue.ports import (
    Delivery,
    PartitionStatus,
    QueueFull,
    QueueMessage,
    QueueRetention,
    QueueStatus,
    QueueUnavailable,
    partition_of,
)

_PARTITION_SUFFIX = "-partition-"
# The admin API's spelling of MessageId.earliest.
_EARLIEST = {"ledgerId": -1, "entryId": -1, "partitionIndex": -1}
# Extra seconds past the client's own send timeout before publish gives up waiting for receipts.
_RECEIPT_GRACE_SECONDS = 2.0
# Namespaces other applications share: Tessera sets no policy there.
SHARED_NAMESPACES = frozenset({"public/default"})
DEFAULT_RETENTION = QueueRetention(hours=720, megabytes=1024)
# The send results of a producer the broker blocked for its backlog quota.
_QUOTA_REFUSALS = frozenset(
    {"ProducerBlockedQuotaExceededError", "ProducerBlockedQuotaExceededException"}
)
# Seconds a client is told to wait when the broker's own quota refused (its check runs every
# backlogQuotaCheckIntervalInSeconds, a minute by default).
_BROKER_QUOTA_RETRY_AFTER_S = 10
_MIB = 1024 * 1024


def refuse_shared_namespace(namespace: str) -> None:
    """`tessera install` sets policies on the namespace: never on one other applications use."""
    if namespace in SHARED_NAMESPACES:
        raise ConfigurationError(
            f"PULSAR_NAMESPACE={namespace} is shared with other applications: Tessera sets no "
            "retention or backlog policy there; set PULSAR_NAMESPACE to a namespace of its own "
            "(the default public/tessera), which `tessera install` creates"
        )


def _route(message: Any, partitions: int) -> int:
    return partition_of(str(message.partition_key()), partitions)


def _settle(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[str], result: Any, _: Any
) -> None:
    # Runs on a client thread: hand the outcome to the event loop, which owns the future.
    outcome = "Ok" if result == pulsar.Result.Ok else str(getattr(result, "name", result))

    def finish() -> None:
        if not future.done():
            future.set_result(outcome)

    loop.call_soon_threadsafe(finish)


def _partition_of_topic(topic_name: str, fallback: int) -> int:
    _, found, index = topic_name.rpartition(_PARTITION_SUFFIX)
    return int(index) if found and index.isdigit() else fallback


def _delivery(message: Any) -> Delivery:
    message_id = message.message_id()
    position = int(message_id.ledger_id()) << 32 | int(message_id.entry_id())
    return Delivery(
        partition=_partition_of_topic(str(message.topic_name()), int(message_id.partition())),
        position=position,
        key=str(message.partition_key()),
        body=bytes(message.data()),
        redelivered=int(message.redelivery_count()) > 0,
        handle=message,
    )


class PulsarIngestQueue:
    backend = "pulsar"

    def __init__(
        self,
        service_url: str,
        *,
        admin_url: str,
        token: str | None,
        namespace: str = "public/tessera",
        topic: str = "tessera-ingest",
        partitions: int = 8,
        publish_timeout: float = 5.0,
        max_backlog_mb: int = 1024,
    ) -> None:
        self.service_url = service_url
        self.admin_url = admin_url.rstrip("/")
        self._token = token
        self.namespace = namespace
        self.topic = topic
        self.partitions = partitions
        self.publish_timeout = publish_timeout
        self.topic_url = f"persistent://{namespace}/{topic}"
        self.subscription = f"{topic}-workers"
        self._client: Any = None
        self._producer: Any = None
        self._producer_lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None
        self._consumers: builtins.list[PulsarConsumer] = []
        self._closed = False
        self.max_backlog_mb = max_backlog_mb
        self.backlog_gate = BacklogGate(
            limit_bytes=max_backlog_mb * _MIB,
            measure=self._measure_backlog,
            what=f"pulsar topic {self.topic_url}",
        )

    def __repr__(self) -> str:  # the token stays out of reprs (and so out of logs)
        return f"PulsarIngestQueue({self.service_url!r}, topic={self.topic_url!r})"

    @property
    def _topic_path(self) -> str:
        tenant, namespace = self.namespace.split("/", 1)
        return f"/admin/v2/persistent/{quote(tenant)}/{quote(namespace)}/{quote(self.topic)}"

    @property
    def _namespace_path(self) -> str:
        tenant, namespace = self.namespace.split("/", 1)
        return f"/admin/v2/namespaces/{quote(tenant)}/{quote(namespace)}"

    async def _admin(
        self, method: str, path: str, *, body: Any = None, accept: tuple[int, ...] = ()
    ) -> httpx.Response:
        """One admin REST call; any answer but 2xx or one of ``accept`` is QueueUnavailable."""
        if self._http is None:
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            timeout = httpx.Timeout(max(self.publish_timeout, 5.0) * 2)
            self._http = httpx.AsyncClient(
                base_url=self.admin_url, headers=headers, timeout=timeout
            )
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise QueueUnavailable(
                f"pulsar admin API at {self.admin_url} unreachable ({type(exc).__name__})"
            ) from None
        if response.is_success or response.status_code in accept:
            return response
        if response.status_code in (401, 403):
            raise QueueUnavailable(
                f"pulsar admin API at {self.admin_url} refused the credentials "
                f"({response.status_code}; check PULSAR_AUTH_TOKEN)"
            )
        raise QueueUnavailable(
            f"pulsar admin API {method} {path} answered {response.status_code}: "
            f"{response.text[:200]}"
        )

    def _ensure_client(self) -> Any:
        if self._closed:
            raise QueueUnavailable(f"the pulsar queue on {self.topic_url} is closed")
        if self._client is None:
            # Lookups and connection attempts give up within the publish timeout, so a broker
            # that is down (or refuses the token) surfaces as an error instead of a hang.
            self._client = pulsar.Client(
                self.service_url,
                authentication=pulsar.AuthenticationToken(self._token) if self._token else None,
                operation_timeout_seconds=max(1, math.ceil(self.publish_timeout)),
                connection_timeout_ms=max(1000, int(self.publish_timeout * 1000)),
                logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn),
            )
        return self._client

    async def start(self) -> None:
        created = await self._admin(
            "PUT", f"{self._topic_path}/partitions", body=self.partitions, accept=(404, 409)
        )
        if created.status_code == 404:
            # No namespace yet (first start before `tessera install`): make it, then the topic.
            # Its policies are the broker's defaults until install sets them.
            await self._admin("PUT", self._namespace_path, accept=(409,))
            await self._admin(
                "PUT", f"{self._topic_path}/partitions", body=self.partitions, accept=(409,)
            )
        await self._admin(
            "PUT",
            f"{self._topic_path}/subscription/{quote(self.subscription)}",
            body=_EARLIEST,
            accept=(409,),
        )
        self._ensure_client()

    async def _ensure_producer(self) -> Any:
        async with self._producer_lock:
            if self._producer is None:
                client = self._ensure_client()
                try:
                    self._producer = await asyncio.to_thread(
                        client.create_producer,
                        self.topic_url,
                        batching_enabled=False,
                        send_timeout_millis=max(1000, int(self.publish_timeout * 1000)),
                        max_pending_messages=10_000,
                        max_pending_messages_across_partitions=50_000,
                        message_router=_route,
                    )
                except pulsar.PulsarException as exc:
                    raise QueueUnavailable(
                        f"pulsar broker at {self.service_url} gave no producer for "
                        f"{self.topic_url} ({type(exc).__name__})"
                    ) from None
            return self._producer

    async def publish(self, messages: builtins.list[QueueMessage]) -> None:
        if not messages:
            return
        await self.backlog_gate.admit(messages)
        producer = await self._ensure_producer()
        loop = asyncio.get_running_loop()
        receipts: builtins.list[asyncio.Future[str]] = []
        for message in messages:
            receipt: asyncio.Future[str] = loop.create_future()
            receipts.append(receipt)
            try:
                producer.send_async(
                    message.body,
                    functools.partial(_settle, loop, receipt),
                    partition_key=message.key,
                )
            except pulsar.PulsarException as exc:
                receipt.set_result(type(exc).__name__)
        try:
            outcomes = await asyncio.wait_for(
                asyncio.gather(*receipts), self.publish_timeout + _RECEIPT_GRACE_SECONDS
            )
        except TimeoutError:
            raise QueueUnavailable(
                f"pulsar broker at {self.service_url} sent no receipt within "
                f"{self.publish_timeout:g} s"
            ) from None
        failed = [outcome for outcome in outcomes if outcome != "Ok"]
        if any(outcome in _QUOTA_REFUSALS for outcome in failed):
            self.backlog_gate.refused()
            raise QueueFull(
                f"pulsar broker at {self.service_url} refused {self.topic_url}: its backlog "
                "quota (TESSERA_QUEUE_MAX_BACKLOG_MB over the partitions, set by `tessera "
                "install`) is reached; retry once the workers caught up",
                retry_after=_BROKER_QUOTA_RETRY_AFTER_S,
            )
        if failed:
            raise QueueUnavailable(
                f"pulsar broker at {self.service_url} did not keep {len(failed)} of "
                f"{len(messages)} messages ({failed[0]})"
            )

    def consumer(self, worker_id: str) -> PulsarConsumer:
        consumer = PulsarConsumer(self, worker_id)
        self._consumers.append(consumer)
        return consumer

    def _forget(self, consumer: PulsarConsumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    async def _subscription_stats(self) -> builtins.list[dict[str, Any]]:
        """The workers' subscription's stats on each partition ({} where it has none yet)."""
        response = await self._admin(
            "GET", f"{self._topic_path}/partitioned-stats?perPartition=true", accept=(404,)
        )
        per_partition = response.json().get("partitions", {}) if response.is_success else {}
        found = []
        for index in range(self.partitions):
            stats = per_partition.get(f"{self.topic_url}{_PARTITION_SUFFIX}{index}") or {}
            found.append((stats.get("subscriptions") or {}).get(self.subscription) or {})
        return found

    async def _measure_backlog(self) -> Backlog:
        subscriptions = await self._subscription_stats()
        messages = sum(int(s.get("msgBacklog", 0)) for s in subscriptions)
        if all("backlogSize" in s for s in subscriptions if s.get("msgBacklog")):
            return Backlog(messages, bytes=sum(int(s.get("backlogSize", 0)) for s in subscriptions))
        return Backlog(messages)  # a broker without byte counts: sized by the messages

    async def status(self) -> QueueStatus:
        partitions = []
        for index, subscription in enumerate(await self._subscription_stats()):
            consumers = subscription.get("consumers") or [{}]
            owner = subscription.get("activeConsumerName") or consumers[0].get("consumerName")
            partitions.append(
                PartitionStatus(
                    partition=index,
                    backlog=int(subscription.get("msgBacklog", 0)),
                    owner=str(owner) if owner else None,
                )
            )
        return QueueStatus(
            backend=self.backend,
            topic=self.topic_url,
            partitions=partitions,
            details={"subscription": self.subscription, "service_url": self.service_url},
            backpressure=await self.backlog_gate.observed(),
        )

    async def apply_retention(self, retention: QueueRetention) -> builtins.list[str]:
        refuse_shared_namespace(self.namespace)
        await self._admin("PUT", self._namespace_path, accept=(409,))
        quota_bytes = max(1, self.max_backlog_mb * _MIB // self.partitions)
        # Pulsar refuses a backlog quota as large as the retention size (and the reverse), so
        # the retention gets at least one megabyte more than a partition's quota.
        kept_mb = max(retention.megabytes, quota_bytes // _MIB + 1)
        minutes = max(1, round(retention.hours * 60))
        # The old quota could block a smaller retention: off first, back on after.
        await self._admin(
            "DELETE",
            f"{self._namespace_path}/backlogQuota?backlogQuotaType=destination_storage",
            accept=(404,),
        )
        await self._admin(
            "POST",
            f"{self._namespace_path}/retention",
            body={
                # Pulsar reads 0 minutes as "no retention" and refuses it beside a size.
                "retentionTimeInMinutes": minutes,
                "retentionSizeInMB": kept_mb,
            },
        )
        await self._admin(
            "POST",
            f"{self._namespace_path}/backlogQuota?backlogQuotaType=destination_storage",
            body={"limitSize": quota_bytes, "limitTime": -1, "policy": "producer_exception"},
        )
        # 0 switches both off for the namespace, whatever the broker's defaults say.
        await self._admin("POST", f"{self._namespace_path}/messageTTL", body=0)
        await self._admin("POST", f"{self._namespace_path}/subscriptionExpirationTime", body=0)
        lines = [
            f"pulsar namespace {self.namespace}: acknowledged messages kept {minutes / 60:g} h"
            f" / {kept_mb} MB; no message TTL, no subscription expiration",
            f"pulsar namespace {self.namespace}: backlog quota {quota_bytes / _MIB:.1f} MB per "
            f"partition ({self.max_backlog_mb} MB over {self.partitions}), producer_exception: "
            "a full backlog refuses publishing (503), never evicts unprocessed messages",
        ]
        if kept_mb != retention.megabytes:
            lines.append(
                f"pulsar namespace {self.namespace}: retention size raised from "
                f"{retention.megabytes} to {kept_mb} MB (Pulsar wants it above a partition's "
                "backlog quota)"
            )
        return lines

    async def read_retention(self) -> QueueRetention | None:
        """The namespace's retention policy as the broker keeps it; None when none is set (or
        a limit is infinite, -1). A missing namespace is QueueUnavailable, as for ``start``."""
        response = await self._admin("GET", f"{self._namespace_path}/retention")
        try:
            policy = response.json() if response.content else None
        except ValueError:  # not JSON: nothing it states
            return None
        if not isinstance(policy, dict):
            return None
        minutes = policy.get("retentionTimeInMinutes")
        megabytes = policy.get("retentionSizeInMB")
        if not isinstance(minutes, int) or not isinstance(megabytes, int):
            return None
        if minutes < 0 or megabytes < 0:
            return None
        return QueueRetention(hours=minutes / 60, megabytes=megabytes)

    async def retention_risks(self) -> builtins.list[str]:
        risks = []
        if self.namespace in SHARED_NAMESPACES:
            risks.append(
                f"the topic is in the shared namespace {self.namespace}, whose TTL, backlog "
                "quota and retention other applications set: set PULSAR_NAMESPACE to one of "
                "Tessera's own (default public/tessera) and run `tessera install`"
            )
        namespace = await self._admin("GET", self._namespace_path, accept=(404,))
        policies = namespace.json() if namespace.is_success else {}
        ttl = await self._applied(f"{self._topic_path}/messageTTL?applied=true")
        if ttl is None:
            ttl = policies.get("message_ttl_in_seconds")
        if isinstance(ttl, int) and ttl > 0:
            risks.append(
                f"{self.topic_url} has a message TTL of {ttl} s: unacknowledged messages older "
                "than that are dropped; remove it (`tessera install` sets 0 on the namespace)"
            )
        expiry = policies.get("subscription_expiration_time_minutes")
        if isinstance(expiry, int) and expiry > 0:
            risks.append(
                f"pulsar namespace {self.namespace} expires subscriptions idle {expiry} min, "
                "and the workers' backlog with them; set it to 0 (`tessera install` does)"
            )
        quotas = await self._applied(f"{self._topic_path}/backlogQuotaMap?applied=true")
        if not isinstance(quotas, dict):
            quotas = policies.get("backlog_quota_map") or {}
        for kind, quota in quotas.items():
            if isinstance(quota, dict) and quota.get("policy") == "consumer_backlog_eviction":
                risks.append(
                    f"{self.topic_url} has a {kind} backlog quota with consumer_backlog_eviction:"
                    " a full backlog evicts unprocessed messages; use producer_exception "
                    "(`tessera install` sets it)"
                )
        return risks

    async def _applied(self, path: str) -> Any:
        """A topic policy as the broker applies it (topic, namespace or broker default); None
        when the topic is not there or the broker does not answer it."""
        response = await self._admin("GET", path, accept=(404, 405, 500))
        if not response.is_success or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.backlog_gate.close()
        for consumer in list(self._consumers):
            await consumer.close()
        producer, client, http = self._producer, self._client, self._http
        self._producer = self._client = self._http = None
        if producer is not None:
            await _quietly(producer.close)
        if client is not None:
            await _quietly(client.close)
        if http is not None:
            await http.aclose()


async def _quietly(close: Any) -> None:
    # Closing something the broker already dropped (or that timed out) is not worth an error.
    with contextlib.suppress(pulsar.PulsarException):
        await asyncio.to_thread(close)


class PulsarConsumer:
    """One worker's member of the Failover subscription; subscribes on its first fetch."""

    def __init__(self, queue: PulsarIngestQueue, worker_id: str) -> None:
        self._queue = queue
        self.worker_id = worker_id
        self._consumer: Any = None
        self._subscribe_lock = asyncio.Lock()
        # Handed out and not acknowledged: a reconnect makes the broker send them again, and this
        # consumer must not give them out twice.
        self._outstanding: set[tuple[int, int]] = set()
        self._closed = False

    async def _ensure_consumer(self) -> Any:
        async with self._subscribe_lock:
            if self._closed:
                raise QueueUnavailable(f"pulsar consumer {self.worker_id} is closed")
            if self._consumer is None:
                client = self._queue._ensure_client()
                try:
                    self._consumer = await asyncio.to_thread(
                        client.subscribe,
                        self._queue.topic_url,
                        self._queue.subscription,
                        consumer_type=pulsar.ConsumerType.Failover,
                        consumer_name=self.worker_id,
                        initial_position=pulsar.InitialPosition.Earliest,
                        # A small prefetch: what sits in it when a partition moves to another
                        # consumer is what both could see.
                        receiver_queue_size=100,
                    )
                except pulsar.PulsarException as exc:
                    raise QueueUnavailable(
                        f"pulsar broker at {self._queue.service_url} refused the subscription "
                        f"{self._queue.subscription} ({type(exc).__name__})"
                    ) from None
            return self._consumer

    async def fetch(self, max_messages: int, wait_seconds: float) -> builtins.list[Delivery]:
        consumer = await self._ensure_consumer()
        try:
            received = await asyncio.to_thread(_receive, consumer, max_messages, wait_seconds)
        except pulsar.PulsarException as exc:
            if self._closed:
                return []
            raise QueueUnavailable(
                f"pulsar consumer {self.worker_id} could not receive ({type(exc).__name__})"
            ) from None
        deliveries = []
        for message in received:
            delivery = _delivery(message)
            place = (delivery.partition, delivery.position)
            if place not in self._outstanding:
                self._outstanding.add(place)
                deliveries.append(delivery)
        # Per partition they arrive in order already; across partitions in partition order.
        deliveries.sort(key=lambda d: (d.partition, d.position))
        return deliveries

    async def ack(self, deliveries: builtins.list[Delivery]) -> None:
        if not deliveries:
            return
        consumer = await self._ensure_consumer()
        try:
            await asyncio.to_thread(_acknowledge, consumer, [d.handle for d in deliveries])
        except pulsar.PulsarException as exc:
            raise QueueUnavailable(
                f"pulsar consumer {self.worker_id} could not acknowledge ({type(exc).__name__})"
            ) from None
        for delivery in deliveries:
            self._outstanding.discard((delivery.partition, delivery.position))

    async def close(self) -> None:
        async with self._subscribe_lock:
            if self._closed:
                return
            self._closed = True
            consumer, self._consumer = self._consumer, None
        self._queue._forget(self)
        if consumer is not None:
            # Closing flushes pending acknowledgements; the broker then hands what is still
            # unacknowledged to the next active consumer.
            await _quietly(consumer.close)
        self._outstanding.clear()


def _receive(consumer: Any, max_messages: int, wait_seconds: float) -> builtins.list[Any]:
    """Blocking, on a worker thread: wait for the first message, then take what is already
    prefetched without waiting."""
    messages: builtins.list[Any] = []
    timeout_ms = max(0, int(wait_seconds * 1000))
    while len(messages) < max_messages:
        try:
            messages.append(consumer.receive(timeout_millis=timeout_ms))
        except pulsar.Timeout:
            break
        timeout_ms = 0
    return messages


def _acknowledge(consumer: Any, messages: builtins.list[Any]) -> None:
    for message in messages:
        consumer.acknowledge(message)
