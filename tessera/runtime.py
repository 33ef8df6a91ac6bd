"""Everything a running server needs, built once from settings and passed down."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import timedelta

import httpx

from tessera.core.locks import Locks
from tessera.core.patterns import PatternLimits
from tessera.core.patterns import configure as configure_patterns
from tessera.core.throttle import BucketStore, Throttle, Throttles
from tessera.destinations.dispatch import DestinationDispatcher
from tessera.destinations.worker import DeliveryWorker
from tessera.identity.operations import ProfileOperations
from tessera.identity.profile_ids import ProfileIds
from tessera.identity.resolver import IdentityPolicy, IdentityResolver
from tessera.identity.visitor import VisitorDirectory
from tessera.model.bounds import ProfileLimits
from tessera.model.common import DEFAULT_TENANT
from tessera.model.source import EventSource
from tessera.ops.housekeeping import Housekeeping
from tessera.ops.install import bootstrap, identity_salt
from tessera.outbound.network import outbound_client
from tessera.outbound.policy import OutboundPolicy
from tessera.pipeline.enrich.device import warm_up as warm_up_device_rules
from tessera.pipeline.ingest import Ingestor
from tessera.pipeline.new_profiles import NewProfileThrottle
from tessera.pipeline.processing import ProcessingRules
from tessera.pipeline.request import Intake
from tessera.pipeline.sources import SourceDirectory
from tessera.security.tokens import TokenService
from tessera.segments.job import ResegmentationJobs
from tessera.segments.live import LiveSegments
from tessera.settings import Settings
from tessera.storage.factory import Storage, build_storage
from tessera.workers.connection import ConnectedQueue
from tessera.workers.dead_letters import DeadLetterDesk
from tessera.workers.intake import QueueIntake
from tessera.workers.queue_factory import build_queue
from tessera.workers.retention import QueueTrimmer
from tessera.workers.worker import QueueWorker, WorkerOptions
from tessera.workflow.action import ActionServices
from tessera.workflow.consents import ConsentCheck, ConsentRules
from tessera.workflow.directory import RuleBook, WorkflowDirectory
from tessera.workflow.held_work import HeldWork
from tessera.workflow.registry import ActionRegistry, default_registry
from tessera.workflow.scheduler import DelayedSteps
from tessera.workflow.stage import AutomationStage

log = logging.getLogger(__name__)


def profile_limits(settings: Settings) -> ProfileLimits:
    return ProfileLimits(
        max_number=settings.max_number,
        max_bytes=settings.max_profile_bytes,
        max_traits=settings.max_profile_traits,
        max_ids=settings.max_profile_ids,
        max_merges=settings.max_profile_merges,
    )


def throttles(settings: Settings, buckets: BucketStore) -> Throttles:
    return Throttles(
        login=Throttle(
            "login",
            settings.throttle_login_per_minute,
            "TESSERA_THROTTLE_LOGIN_PER_MINUTE",
            buckets,
        ),
        install=Throttle(
            "install",
            settings.throttle_install_per_minute,
            "TESSERA_THROTTLE_INSTALL_PER_MINUTE",
            buckets,
        ),
        new_profiles=Throttle(
            "new-profile",
            settings.throttle_new_profiles_per_minute,
            "TESSERA_THROTTLE_NEW_PROFILES_PER_MINUTE",
            buckets,
        ),
    )


def worker_options(settings: Settings) -> WorkerOptions:
    return WorkerOptions(
        concurrency=settings.worker_concurrency,
        fetch=settings.worker_fetch,
        max_attempts=settings.worker_max_attempts,
        backoff_s=settings.worker_retry_backoff_ms / 1000,
    )


@dataclass
class Runtime:
    settings: Settings
    storage: Storage
    sources: SourceDirectory
    visitors: VisitorDirectory
    ingestor: Ingestor
    tokens: TokenService
    identity: IdentityResolver
    profile_operations: ProfileOperations
    processing: ProcessingRules
    consent_rules: ConsentRules
    # One outbound HTTP client (connection pool) for everything that calls other systems; it
    # connects only where the request-forgery policy allows (tessera/outbound/).
    http: httpx.AsyncClient
    outbound: OutboundPolicy
    destinations: DestinationDispatcher
    delivery: DeliveryWorker
    segments: LiveSegments
    actions: ActionRegistry
    automation: AutomationStage
    delayed_steps: DelayedSteps
    # One writer per profile: the per-key locks every path that changes a profile takes.
    locks: Locks
    housekeeping: Housekeeping
    # Delayed steps and destination messages held until their records are committed.
    held_work: HeldWork
    segment_jobs: ResegmentationJobs
    # Login, install and new-profile throttles (core/throttle.py).
    throttles: Throttles
    # Async mode: the ingest queue, what /track hands requests to, and the workers this
    # process runs (serve: TESSERA_WORKERS of them; `tessera worker`: one).
    intake: Intake
    dead_letters: DeadLetterDesk
    queue: ConnectedQueue | None = None
    queue_workers: list[QueueWorker] = field(default_factory=list)
    queue_trimmer: QueueTrimmer | None = None
    ready: bool = False
    default_source: EventSource | None = field(default=None)
    admin_exists: bool = False

    async def start(self) -> None:
        """Starts every part; if one fails, the parts already started are stopped again (in
        reverse order) before the error propagates, so a failed start leaves no task running
        and no connection open."""
        async with AsyncExitStack() as started:
            await self._start_parts(started)
            started.pop_all()  # all up: from now on, stop() ends them
        self.ready = True

    async def _start_parts(self, started: AsyncExitStack) -> None:
        started.push_async_callback(self.http.aclose)
        await self.storage.start()
        started.push_async_callback(self.storage.close)
        self.default_source = await bootstrap(self.storage, self.settings)
        await self.delivery.start()  # the outbox table exists once bootstrap installed it
        started.push_async_callback(self.delivery.stop)
        self.held_work.start()
        started.push_async_callback(self.held_work.stop)
        # Expired tokens and memory keys are refused anyway; dropping them keeps tables small.
        await self.housekeeping.run_once()
        self.housekeeping.start()
        started.push_async_callback(self.housekeeping.stop)
        self.identity.policy = replace(
            self.identity.policy, salt=await identity_salt(self.storage, self.settings)
        )
        self.admin_exists = await self.storage.users.count(DEFAULT_TENANT) > 0
        # Loading the user-agent rules takes ~0.1 s: here, not in the first visitor's request.
        await asyncio.to_thread(warm_up_device_rules)
        if self.settings.enable_workflow:  # off: delayed steps wait until it is on again
            self.delayed_steps.start()
            started.push_async_callback(self.delayed_steps.stop)
        if self.queue is not None:
            started.push_async_callback(self.queue.close)
            await self.queue.start()
        for worker in self.queue_workers:
            worker.start()
            started.push_async_callback(worker.stop)
        if self.queue is not None and self.queue_workers:
            self.queue_trimmer = QueueTrimmer(self.queue)
            self.queue_trimmer.loop.start()

    async def stop(self) -> None:
        self.ready = False
        # Workers first: they finish and acknowledge their batch while the store is open.
        for worker in self.queue_workers:
            await worker.stop()
        if self.queue_trimmer is not None:
            await self.queue_trimmer.loop.stop()
        if self.queue is not None:
            await self.queue.close()
        await self.housekeeping.stop()
        await self.delayed_steps.stop()
        await self.held_work.stop()
        await self.delivery.stop()  # first: its sends still need the store and the client
        await self.segment_jobs.stop()
        await self.storage.close()
        await self.http.aclose()


def build_runtime(settings: Settings, *, queue_workers: int | None = None) -> Runtime:
    """``queue_workers``: how many queue workers this process runs in async mode (default
    TESSERA_WORKERS, for `tessera serve`)."""
    storage = build_storage(settings)
    limits = profile_limits(settings)
    configure_patterns(
        PatternLimits(
            max_length=settings.regex_max_length,
            max_repeat=settings.regex_max_repeat,
            budget_s=settings.regex_budget_seconds,
        )
    )
    identity = IdentityResolver(
        IdentityPolicy(
            enabled=settings.profile_merging,
            salt="",  # read from the configuration store at start
            paths=settings.merge_key_paths,
            blocked=settings.blocked_merge_values,
            per_key_limit=settings.merge_key_limit,
            limits=limits,
        ),
        storage.profiles,
        storage.sessions,
    )
    # The installation's secret proves the profile ids public clients were issued; it is the
    # identity salt's (read at start), under a name of its own (profile_ids.py).
    profile_ids = ProfileIds(lambda: identity.policy.salt)
    visitors = VisitorDirectory(
        storage.profiles,
        storage.sessions,
        profile_cache=storage.profile_cache,
        session_cache=storage.session_cache,
        ids=profile_ids,
        erased=storage.erased_profiles,
    )
    locks = storage.locks
    outbound = OutboundPolicy.from_settings(settings)
    http = outbound_client(outbound, timeout_s=settings.http_timeout_seconds)
    delivery = DeliveryWorker(
        storage.outbox,
        storage.destinations,
        http,
        poll_interval_s=settings.delivery_poll_seconds,
        backoff_base_s=settings.delivery_backoff_seconds,
        backoff_max_s=settings.delivery_backoff_max_seconds,
        concurrency=settings.delivery_concurrency,
    )
    destinations = DestinationDispatcher(storage.destinations, ttl_s=settings.source_cache_seconds)
    held_work = HeldWork(
        schedules=storage.schedules,
        outbox=storage.outbox,
        profiles=storage.profiles,
        events=storage.events,
        wake_delivery=delivery.wake,
    )
    segments = LiveSegments(storage.segments, ttl_s=settings.source_cache_seconds)
    segment_jobs = ResegmentationJobs(segments, storage.profiles, visitors, storage.writer, locks)
    consent_rules = ConsentRules(storage.consent_types, ttl_s=settings.source_cache_seconds)
    actions = default_registry()
    automation = AutomationStage(
        rules=RuleBook(storage.rules, ttl_s=settings.workflow_cache_seconds),
        workflows=WorkflowDirectory(
            storage.workflows, actions, ttl_s=settings.workflow_cache_seconds
        ),
        services=ActionServices(http=http, memory=storage.memory, outbound=outbound, limits=limits),
        consents=ConsentCheck(consent_rules),
        segments=segments,
        workflows_enabled=settings.enable_workflow,
    )
    processing = ProcessingRules(
        storage.processing_rules, ttl_s=settings.source_cache_seconds, limits=limits
    )
    ingestor = Ingestor(
        writer=storage.writer,
        events=storage.events,
        visitors=visitors,
        locks=locks,
        identity=identity,
        processor=processing.process,
        consents=consent_rules,
        automation=automation,
        profiles=storage.profiles,
        held_work=held_work,
        destinations=destinations,
        close_visit_after=timedelta(seconds=settings.close_visit_after),
    )
    queue = None
    intake: Intake = ingestor.ingest
    workers: list[QueueWorker] = []
    if settings.ingest_mode == "async":
        queue = ConnectedQueue(build_queue(settings, storage.redis_client))
        intake = QueueIntake(queue, profile_ids)
        count = settings.workers if queue_workers is None else queue_workers
        workers = [
            QueueWorker(
                queue=queue,
                ingestor=ingestor,
                dead_letters=storage.dead_letters,
                beats=storage.worker_beats,
                topic=settings.queue_topic,
                options=worker_options(settings),
            )
            for _ in range(count)
        ]
    limited = throttles(settings, storage.buckets)
    return Runtime(
        settings=settings,
        storage=storage,
        throttles=limited,
        intake=NewProfileThrottle(
            intake,
            limited.new_profiles,
            profile_ids,
            behind_proxies=bool(settings.trusted_proxy_networks),
        ),
        dead_letters=DeadLetterDesk(storage.dead_letters, ingestor, queue),
        queue=queue,
        queue_workers=workers,
        sources=SourceDirectory(storage.sources, ttl_s=settings.source_cache_seconds),
        visitors=visitors,
        ingestor=ingestor,
        tokens=TokenService(storage.users, storage.tokens, ttl_s=settings.token_ttl_seconds),
        identity=identity,
        processing=processing,
        consent_rules=consent_rules,
        http=http,
        outbound=outbound,
        destinations=destinations,
        delivery=delivery,
        segments=segments,
        segment_jobs=segment_jobs,
        actions=actions,
        automation=automation,
        delayed_steps=DelayedSteps(
            schedules=storage.schedules,
            stage=automation,
            events=storage.events,
            visitors=visitors,
            writer=storage.writer,
            locks=locks,
            poll_s=settings.scheduler_poll_seconds,
            destinations=destinations,
            held_work=held_work,
            merge_later=ingestor.merge_later,
            identity_paths=settings.merge_key_paths,
        ),
        held_work=held_work,
        locks=locks,
        housekeeping=Housekeeping(storage.tokens, storage.memory, interval_s=3600),
        profile_operations=ProfileOperations(
            profiles=storage.profiles,
            sessions=storage.sessions,
            events=storage.events,
            writer=storage.writer,
            visitors=visitors,
            locks=locks,
            erased=storage.erased_profiles,
        ),
    )
