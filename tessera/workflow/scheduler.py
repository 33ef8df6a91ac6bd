"""Delayed workflow steps: a workflow that paused at a ``delay`` node continues here, later, in
whichever process claims the step first — surviving restarts, because the step is in the store.

Each due step is leased (``ScheduleStore.claim_due``), run under the same per-profile locks as
ingestion (its session's, then its profile's — the profile it was paused for, or the survivor
it was merged into since), committed like an ingest request (profile, session, the internal
events it emitted, new delays), and only then marked done. A process that dies mid-step leaves
a lease that runs out; the step runs again (at least once: an action that reaches the outside
world may repeat then). Its effects on the profile are applied once: the profile is written
with the step's mark, and a second run of a step whose commit went through only releases what
the first run kept (its new delays and destination messages, held until the commit:
workflow/held_work.py, the same steps as an ingest request).

A step whose workflow was deleted, disabled or redeployed without the node it paused at is
dropped with a log line: there is nothing sensible to continue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from tessera.core.background import BackgroundLoop
from tessera.core.locks import Locks, LockSetLike
from tessera.destinations.planner import DestinationPlanner
from tessera.errors import StorageUnavailable
from tessera.identity.locking import profile_lock_key, session_lock_key
from tessera.identity.resolver import snapshot_paths
from tessera.identity.visitor import VisitorDirectory
from tessera.model.applied import PROFILE_MARKS, remember, request_token
from tessera.model.common import utcnow
from tessera.model.event import Event, event_document
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.storage.automation_ports import ScheduledStep, ScheduleStore
from tessera.storage.ports import ChangeSet, EventStore, RecordWriter
from tessera.workflow.directory import DeployedWorkflow
from tessera.workflow.engine import run_graph
from tessera.workflow.held_work import HeldWork
from tessera.workflow.stage import AutomationStage, StageOutcome, Subject

log = logging.getLogger(__name__)

# Ingestor.merge_later: (tenant, profile id, merge-key values before, merge-on paths) → warnings.
MergeLater = Callable[[str, str, dict[str, Any], list[str]], Awaitable[list[str]]]

# A step that keeps failing (its event was erased, the store is down) is given up after this.
MAX_ATTEMPTS = 5
LEASE_SECONDS = 120.0
BATCH = 50
# Rounds of finding a merged profile's survivor before the step is tried again later.
MAX_ROUNDS = 8


class DelayedSteps:
    def __init__(
        self,
        *,
        schedules: ScheduleStore,
        stage: AutomationStage,
        events: EventStore,
        visitors: VisitorDirectory,
        writer: RecordWriter,
        locks: Locks,
        poll_s: float,
        held_work: HeldWork,
        destinations: DestinationPlanner | None = None,
        merge_later: MergeLater | None = None,
        identity_paths: tuple[str, ...] = (),
    ) -> None:
        self._destinations = destinations
        self._held_work = held_work
        self._merge_later = merge_later
        self._identity_paths = identity_paths
        self._schedules = schedules
        self._stage = stage
        self._events = events
        self._visitors = visitors
        self._writer = writer
        self._locks = locks
        self._poll_s = poll_s
        self._background = BackgroundLoop("tessera-delayed-steps", self._loop)
        self.completed = 0

    def start(self) -> None:
        self._background.start()

    async def stop(self) -> None:
        await self._background.stop()

    async def _loop(self) -> None:
        while True:
            try:
                ran = await self.run_due()
            # The loop serves every delayed workflow: a failure is logged and retried at the
            # next tick, never allowed to end the loop. An outage is expected, not a defect.
            except StorageUnavailable as exc:
                log.warning("delayed workflow steps wait: %s", exc.message)
                ran = 0
            except Exception:
                log.exception("running delayed workflow steps failed; retrying")
                ran = 0
            if ran < BATCH:
                await asyncio.sleep(self._poll_s)

    async def run_due(self) -> int:
        """Claim and run the steps due now; how many were claimed."""
        steps = await self._schedules.claim_due(utcnow(), limit=BATCH, lease_s=LEASE_SECONDS)
        for step in steps:
            try:
                await self.run_step(step)
            except Exception:
                log.exception("delayed step %s of workflow %s failed", step.id, step.workflow_id)
                if step.attempts >= MAX_ATTEMPTS:
                    log.error("delayed step %s given up after %d attempts", step.id, step.attempts)
                    await self._schedules.done(step.tenant, step.id)
                continue
            await self._schedules.done(step.tenant, step.id)
            self.completed += 1
        return len(steps)

    async def run_step(self, step: ScheduledStep) -> None:
        deployed = await self._stage.workflows.deployed(step.tenant, step.workflow_id)
        if deployed is None or step.node_id not in deployed.graph.nodes:
            log.warning(
                "delayed step %s dropped: workflow %s is gone, disabled or lost node %s",
                step.id,
                step.workflow_id,
                step.node_id,
            )
            return
        event = await self._events.get(step.tenant, step.event_id)
        if event is None:
            log.warning("delayed step %s dropped: its event %s is gone", step.id, step.event_id)
            return
        # The step's own apply-once mark: run again after its commit (its runner died before
        # marking it done), it changes the profile no second time (model/applied.py).
        mark = request_token(step.id)
        if step.profile_id is None:
            await self._continue(step, deployed, event, None, None, None, mark)
            return
        # The profile may have been merged into another since: find its survivor first, then
        # take the survivor's and the session's locks together. Never wait for a lock while
        # holding one: when the profile moved again meanwhile, let go and start over.
        profile_id = step.profile_id
        for _round in range(MAX_ROUNDS):
            found = await self._visitors.profile(step.tenant, profile_id)
            profile_id = found.id if found is not None else profile_id
            keys = {profile_lock_key(step.tenant, profile_id)}
            if step.session_id is not None:
                keys.add(session_lock_key(step.tenant, step.session_id))
            async with self._locks.hold_all(keys) as held:
                profile = await self._visitors.profile(step.tenant, profile_id)
                if profile is not None and mark in profile.metadata.applied:
                    # Committed before: only releasing what it kept may be missing.
                    await self._held_work.release(step.tenant, mark)
                    return
                if profile is None or profile.id == profile_id:
                    session = await self._session(step)
                    await self._continue(step, deployed, event, profile, session, held, mark)
                    return
            profile_id = profile.id
        raise StorageUnavailable(f"the profile of delayed step {step.id} keeps changing")

    async def _session(self, step: ScheduledStep) -> Session | None:
        if step.session_id is None:
            return None
        return await self._visitors.session(step.tenant, step.session_id)

    async def _continue(
        self,
        step: ScheduledStep,
        deployed: DeployedWorkflow,
        event: Event,
        profile: Profile | None,
        session: Session | None,
        held: LockSetLike | None,
        mark: str,
    ) -> None:
        """Run the rest of the workflow, then what a request would do with its outcome:
        rules for the events it emitted, segments when the profile changed, destinations,
        new delays; merges it asked for are made once the locks are let go (``merge_later``)."""
        now = utcnow()
        document: dict[str, Any] | None = msgspec.to_builtins(profile) if profile else None
        session_document: dict[str, Any] | None = msgspec.to_builtins(session) if session else None
        # Merge-key values before the run: what the run writes there is merged on afterwards.
        before = snapshot_paths(document, self._identity_paths) if document is not None else {}
        subject = Subject(step.tenant, document, session_document)
        context = self._stage.context(subject, event, deployed, now)
        result = await run_graph(
            deployed.graph, context, resume=(step.node_id, step.port, step.payload)
        )
        outcome = StageOutcome(origin=step.id)
        follow = self._stage.absorb(subject, event, deployed, context, result, outcome, now)
        if result.error is not None:
            log.info(
                "delayed step %s: workflow %s failed: %s",
                step.id,
                deployed.workflow.id,
                result.error,
            )
        if not follow and outcome.profile_changed:
            follow = await self._stage.segment_events(subject, [event], now, outcome)
        internal = list(follow)
        if follow:
            # Emitted and segment events are matched against rules like any internal event.
            more = await self._stage.run(subject, follow, now, origin=step.id)
            internal += more.internal_events
            outcome.schedules += more.schedules
            outcome.merge_on += more.merge_on
            outcome.profile_changed |= more.profile_changed
            outcome.session_changed |= more.session_changed
        for made in internal:
            made.metadata.request = mark
        changes = ChangeSet(events=internal)
        if profile is not None and document is not None:
            # Written with the step's mark even when the run changed nothing on it: the mark
            # is what tells a second run of this step that the first one was committed.
            changed = msgspec.convert(document, Profile) if outcome.profile_changed else profile
            if outcome.profile_changed:
                changed.metadata.time.update = now
            remember(changed.metadata.applied, mark, PROFILE_MARKS)
            changes.profiles.append(changed)
        if session_document is not None and outcome.session_changed:
            changes.sessions.append(msgspec.convert(session_document, Session))
        messages: list[Any] = []
        if self._destinations is not None and await self._destinations.active(step.tenant):
            messages = await self._destinations.plan(
                step.tenant,
                events=[event_document(e) for e in internal],
                profile=document,
                session=session_document,
                profile_changed=outcome.profile_changed,
                request=mark,
            )

        async def store() -> None:
            if not len(changes):
                return
            await self._visitors.commit(self._writer, changes, held=held)

        await self._held_work.commit(step.tenant, mark, store, outcome.schedules, messages)
        if outcome.merge_on and profile is not None and self._merge_later is not None:
            await self._merge_later(step.tenant, profile.id, before, outcome.merge_on)
