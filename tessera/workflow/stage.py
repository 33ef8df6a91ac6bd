"""The automation stage of the ingest path: rules → workflows → segments, per request.

For each event, in order, every enabled rule of its type whose source, segment, condition and
consents hold runs its workflow's deployed graph against the request's profile and session
documents (one shared copy: a later workflow sees what an earlier one changed). The event records
which rules and workflows processed it (``metadata.automation``).

What the runs ask for happens after them:
- events they emit become internal events of the same profile and session, stored with the
  request's events and matched against rules in turn;
- the profile's segments are evaluated, and each segment entered or left becomes an internal
  ``segment-entered`` / ``segment-left`` event that rules can react to;
- delays become scheduled steps, merges on keys are handed back to the ingest path.

Internal events may cause more internal events; after ``MAX_DEPTH`` rounds the rest are stored
but not matched, so two workflows that emit each other's events cannot loop forever.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from tessera.core.patterns import request_budget
from tessera.errors import InvalidPayload
from tessera.model.common import Ref, derived_id
from tessera.model.event import Automation, Event, EventMetadata, event_document
from tessera.model.segment import SEGMENT_ENTERED, SEGMENT_LEFT, SEGMENTATION_SOURCE
from tessera.model.workflow import Rule
from tessera.query import evaluate, parse
from tessera.storage.automation_ports import ScheduledStep
from tessera.workflow.action import ActionContext, ActionServices
from tessera.workflow.consents import ConsentCheck
from tessera.workflow.directory import DeployedWorkflow, RuleBook, WorkflowDirectory
from tessera.workflow.engine import RunResult, run_graph

log = logging.getLogger(__name__)

MAX_DEPTH = 4


class SegmentChangeLike(Protocol):
    entered: list[str]
    left: list[str]


class SegmentEvaluator(Protocol):
    async def apply(
        self, tenant: str, profile: dict[str, Any], event_types: Collection[str]
    ) -> SegmentChangeLike: ...

    async def segment_names(self, tenant: str) -> Mapping[str, str]: ...


@dataclass(slots=True)
class Subject:
    """The documents a request's workflows work on; None for profile-less (webhook) events."""

    tenant: str
    profile: dict[str, Any] | None
    session: dict[str, Any] | None


@dataclass(slots=True)
class StageOutcome:
    internal_events: list[Event] = field(default_factory=list)
    schedules: list[ScheduledStep] = field(default_factory=list)
    merge_on: list[str] = field(default_factory=list)
    profile_changed: bool = False
    session_changed: bool = False
    # One entry per workflow run, for the debugger (TRACK_DEBUG) and the debug endpoint.
    traces: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Names what the runs make (internal events, delayed steps) so that their ids are the
    # same when the request is retried: where the runs started (empty: a request; a delayed
    # step's id: its continuation) and a count of what was made so far.
    origin: str = ""
    made: int = 0

    def name(self, kind: str) -> str:
        self.made += 1
        return f"{self.origin}:{kind}:{self.made}"


class AutomationStage:
    def __init__(
        self,
        *,
        rules: RuleBook,
        workflows: WorkflowDirectory,
        services: ActionServices,
        consents: ConsentCheck,
        segments: SegmentEvaluator | None = None,
        workflows_enabled: bool = True,
    ) -> None:
        self.rules = rules
        self.workflows = workflows
        self.services = services
        self._consents = consents
        self.segments = segments
        self.workflows_enabled = workflows_enabled

    async def run(
        self,
        subject: Subject,
        events: list[Event],
        now: datetime,
        *,
        debug: bool = False,
        origin: str = "",
    ) -> StageOutcome:
        """``origin``: where the runs started (see StageOutcome.origin). The runs share one
        budget for their regular expressions (TESSERA_REGEX_BUDGET_SECONDS)."""
        with request_budget():
            return await self._run(subject, events, now, debug=debug, origin=origin)

    async def _run(
        self, subject: Subject, events: list[Event], now: datetime, *, debug: bool, origin: str
    ) -> StageOutcome:
        outcome = StageOutcome(origin=origin)
        pending = events
        for depth in range(MAX_DEPTH + 1):
            if not pending:
                break
            if depth == MAX_DEPTH:
                outcome.warnings.append(
                    f"internal events nested deeper than {MAX_DEPTH}: "
                    f"{len(pending)} stored without running rules"
                )
                break
            emitted: list[Event] = []
            if self.workflows_enabled:
                for event in pending:
                    emitted += await self._event(subject, event, now, outcome, debug)
            emitted += await self.segment_events(subject, pending, now, outcome)
            outcome.internal_events += emitted
            pending = emitted
        return outcome

    async def segment_events(
        self, subject: Subject, events: list[Event], now: datetime, outcome: StageOutcome
    ) -> list[Event]:
        """Evaluate the profile's segments after ``events``; the segment-entered / -left events
        of what changed."""
        if self.segments is None or subject.profile is None:
            return []
        change = await self.segments.apply(
            subject.tenant, subject.profile, {event.type for event in events}
        )
        if not (change.entered or change.left):
            return []
        outcome.profile_changed = True
        names = await self.segments.segment_names(subject.tenant)
        template = events[0]
        return [
            internal_event(
                template,
                kind,
                {"segment": segment_id, "name": names.get(segment_id, segment_id)},
                now,
                name=f"{outcome.origin}:{kind}:{segment_id}",
                source=SEGMENTATION_SOURCE,
            )
            for kind, ids in ((SEGMENT_ENTERED, change.entered), (SEGMENT_LEFT, change.left))
            for segment_id in ids
        ]

    async def matching_rules(
        self, subject: Subject, event: Event, document: dict[str, Any] | None = None
    ) -> list[Rule]:
        rules = await self.rules.for_event_type(event.tenant, event.type)
        if not rules:
            return []
        source_id = event.source.id
        records: dict[str, Any] | None = None
        chosen: list[Rule] = []
        for rule in rules:
            if rule.source_id is not None and rule.source_id != source_id:
                continue
            profile = subject.profile
            if rule.segment is not None and (
                profile is None or rule.segment not in profile.get("segments", ())
            ):
                continue
            if rule.condition is not None:
                if records is None:
                    records = {
                        "event": document if document is not None else event_document(event),
                        "profile": profile or {},
                        "session": subject.session or {},
                    }
                try:
                    if not evaluate(parse(rule.condition), records):
                        continue
                except InvalidPayload:
                    continue  # refused when saved; only a grammar change could get here
            if profile is None:
                # No person, so nobody could have granted the consents the rule needs. Consent
                # types marked required bind rules for people, not webhooks of no one.
                if rule.required_consents:
                    continue
            elif await self._consents.missing(
                event.tenant, profile.get("consents") or {}, rule.required_consents
            ):
                continue
            chosen.append(rule)
        return chosen

    async def _event(
        self, subject: Subject, event: Event, now: datetime, outcome: StageOutcome, debug: bool
    ) -> list[Event]:
        if event.metadata.valid is False:
            return []
        if not await self.rules.for_event_type(event.tenant, event.type):
            return []  # most events: no rule listens, so no document is built for them
        emitted: list[Event] = []
        document = event_document(event)
        for rule in await self.matching_rules(subject, event, document):
            automation = event.metadata.automation or Automation()
            event.metadata.automation = automation
            automation.rules.append(rule.id)
            deployed = await self.workflows.deployed(event.tenant, rule.workflow_id)
            if deployed is None:
                problem = (
                    f"rule {rule.id!r}: workflow {rule.workflow_id!r} does not exist, is "
                    "disabled or was never deployed"
                )
                automation.errors.append(problem)
                outcome.warnings.append(f"event {event.id} ({event.type}): {problem}")
                continue
            automation.workflows.append(deployed.workflow.id)
            context = self.context(subject, event, deployed, now, document=document)
            result = await run_graph(deployed.graph, context, trace_payloads=debug)
            emitted += self.absorb(subject, event, deployed, context, result, outcome, now)
            if result.error is not None:
                automation.errors.append(f"workflow {deployed.workflow.id!r}: {result.error}")
            if result.bound_exceeded:
                outcome.warnings.append(
                    f"event {event.id} ({event.type}): workflow {deployed.workflow.id!r} "
                    f"stopped at a bound: {result.error}"
                )
            if debug:
                outcome.traces.append(trace_entry(event, rule, deployed, result))
        return emitted

    def context(
        self,
        subject: Subject,
        event: Event,
        deployed: DeployedWorkflow,
        now: datetime,
        *,
        document: dict[str, Any] | None = None,
    ) -> ActionContext:
        """A run's context; ``document``: the event's document when the caller has it, shared
        by the runs of one event (workflows cannot change the event)."""
        return ActionContext(
            tenant=subject.tenant,
            event=document if document is not None else event_document(event),
            profile=subject.profile,
            session=subject.session,
            now=now,
            services=self.services,
            workflow_id=deployed.workflow.id,
        )

    def absorb(
        self,
        subject: Subject,
        event: Event,
        deployed: DeployedWorkflow,
        context: ActionContext,
        result: RunResult,
        outcome: StageOutcome,
        now: datetime,
    ) -> list[Event]:
        """Take what one run asked for into the outcome; the internal events it emitted."""
        outcome.profile_changed |= context.profile_changed
        outcome.session_changed |= context.session_changed
        if result.error is not None:
            log.info(
                "workflow %s failed on event %s: %s", deployed.workflow.id, event.id, result.error
            )
            return []
        outcome.merge_on += context.effects.merge_on
        for suspension in result.suspensions:
            outcome.schedules.append(
                ScheduledStep(
                    tenant=subject.tenant,
                    # Named from what caused it: a retry of the request schedules the same step.
                    id=derived_id(event.id, "step", outcome.name(deployed.workflow.id)),
                    due=now + timedelta(seconds=suspension.seconds),
                    workflow_id=deployed.workflow.id,
                    workflow_version=deployed.workflow.version,
                    node_id=suspension.node_id,
                    port=suspension.port,
                    payload=suspension.payload,
                    event_id=event.id,
                    profile_id=event.profile.id if event.profile else None,
                    session_id=event.session.id if event.session else None,
                    created=now,
                )
            )
        return [
            internal_event(
                event, wanted.type, wanted.properties, now, name=outcome.name(deployed.workflow.id)
            )
            for wanted in context.effects.emitted
        ]


def internal_event(
    template: Event,
    event_type: str,
    properties: dict[str, Any],
    now: datetime,
    *,
    name: str,
    source: str | None = None,
) -> Event:
    """An event made inside Tessera for the profile and session of ``template``; from the
    template's source unless another (the segmentation's) is named. Its id comes from the
    template's and ``name`` (what made it, unique per template): a retry of the request makes
    the same event again, which is then not stored twice."""
    return Event(
        id=derived_id(template.id, "internal", name),
        tenant=template.tenant,
        type=event_type,
        time=now,
        metadata=EventMetadata(
            insert=now,
            status="internal",
            internal=True,
            profile_less=template.profile is None,
        ),
        source=Ref(source or template.source.id),
        session=template.session,
        profile=template.profile,
        properties=properties,
    )


def trace_entry(
    event: Event, rule: Rule | None, deployed: DeployedWorkflow, result: RunResult
) -> dict[str, Any]:
    return {
        "event": {"id": event.id, "type": event.type},
        "rule": rule.id if rule is not None else None,
        "workflow": {"id": deployed.workflow.id, "version": deployed.workflow.version},
        "error": result.error,
        "suspended": [
            {"node": s.node_id, "port": s.port, "seconds": s.seconds} for s in result.suspensions
        ],
        "nodes": [trace.to_dict() for trace in result.traces],
    }
