"""Delayed workflow steps: a workflow that paused at a ``delay`` node continues here, later, in
whichever process claims the step first — surviving restarts, because the step is in the store.

Each due step is leased (``ScheduleStore.claim_due``), run under the same per-profile locks as
ingestion (its session's, then its profile's — the profile it was paused for, or the survivor
it was merged into since), committed like an ingest request (profile, session, the internal
events it emitted, new delays), and only then marked done. A process that dies mid-step leaves
a lease that runs out; the step runs again (at least once: an action that reaches the outside
world may repeat then).

A step whose workflow was deleted, disabled or redeployed without the node it paused at is
dropped with a log line: there is nothing sensible to continue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec

from tessera.identity.resolver import profile_lock_key
from tessera.model.common import utcnow
from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.model.session import Session
from tessera.pipeline.locks import KeyedLocks
from tessera.pipeline.visitor import VisitorDirectory
from tessera.storage.automation_ports import ScheduledStep, ScheduleStore
from tessera.storage.ports import ChangeSet, EventStore, RecordWriter
from tessera.workflow.engine import run_graph
from tessera.workflow.stage import AutomationStage, StageOutcome, Subject

log = logging.getLogger(__name__)

# A step that keeps failing (its event was erased, the store is down) is given up after this.
MAX_ATTEMPTS = 5
LEASE_SECONDS = 120.0
BATCH = 50


class DelayedSteps:
    def __init__(
        self,
        *,
        schedules: ScheduleStore,
        stage: AutomationStage,
        events: EventStore,
        visitors: VisitorDirectory,
        writer: RecordWriter,
        locks: KeyedLocks,
        poll_s: float,
    ) -> None:
        self._schedules = schedules
        self._stage = stage
        self._events = events
        self._visitors = visitors
        self._writer = writer
        self._locks = locks
        self._poll_s = poll_s
        self._task: asyncio.Task[None] | None = None
        self.completed = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="tessera-delayed-steps")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                ran = await self.run_due()
            # The loop serves every delayed workflow: a failure is logged and retried at the
            # next tick, never allowed to end the loop.
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
        if step.profile_id is None:
            await self._continue(step, event, None, None)
            return
        keys = {profile_lock_key(step.tenant, step.profile_id)}
        if step.session_id is not None:
            keys.add(f"s\x00{step.tenant}\x00{step.session_id}")
        async with self._locks.hold_all(keys):
            profile = await self._visitors.profile(step.tenant, step.profile_id)
            if profile is not None and profile.id != step.profile_id:
                # Merged since: continue for the survivor, under its lock.
                async with self._locks.hold(profile_lock_key(step.tenant, profile.id)):
                    profile = await self._visitors.profile(step.tenant, profile.id)
                    await self._continue(step, event, profile, await self._session(step))
                return
            await self._continue(step, event, profile, await self._session(step))

    async def _session(self, step: ScheduledStep) -> Session | None:
        if step.session_id is None:
            return None
        return await self._visitors.session(step.tenant, step.session_id)

    async def _continue(
        self,
        step: ScheduledStep,
        event: Event,
        profile: Profile | None,
        session: Session | None,
    ) -> None:
        deployed = await self._stage.workflows.deployed(step.tenant, step.workflow_id)
        assert deployed is not None
        now = utcnow()
        document: dict[str, Any] | None = msgspec.to_builtins(profile) if profile else None
        session_document: dict[str, Any] | None = msgspec.to_builtins(session) if session else None
        subject = Subject(step.tenant, document, session_document)
        context = self._stage.context(subject, event, deployed, now)
        result = await run_graph(
            deployed.graph, context, resume=(step.node_id, step.port, step.payload)
        )
        outcome = StageOutcome()
        emitted = self._stage.absorb(subject, event, deployed, context, result, outcome, now)
        if result.error is not None:
            log.info(
                "delayed step %s: workflow %s failed: %s",
                step.id,
                deployed.workflow.id,
                result.error,
            )
        # What the continued run emitted is matched against rules like any internal event.
        if emitted:
            more = await self._stage.run(subject, emitted, now)
            outcome.internal_events = emitted + more.internal_events
            outcome.schedules += more.schedules
            outcome.profile_changed |= more.profile_changed
            outcome.session_changed |= more.session_changed
        changes = ChangeSet(events=outcome.internal_events)
        if document is not None and outcome.profile_changed:
            changed = msgspec.convert(document, Profile)
            changed.metadata.time.update = now
            changes.profiles.append(changed)
        if session_document is not None and outcome.session_changed:
            changes.sessions.append(msgspec.convert(session_document, Session))
        if len(changes):
            await self._writer.commit(changes)
            for changed in changes.profiles:
                self._visitors.remember_profile(changed)
            for changed_session in changes.sessions:
                self._visitors.session_cache.put(
                    f"{changed_session.tenant}\x00{changed_session.id}", changed_session
                )
        if outcome.schedules:
            await self._schedules.add(outcome.schedules)
