"""Processing rules as the ingest path sees them: looked up per event type, cached, applied.

``ProcessingRules.for_event`` answers the rules of one (tenant, event type, source) from memory:
the store is asked once per (tenant, event type) per ``ttl_s`` (one query for all kinds), and
concurrent first requests for a type share that one query. ``forget`` drops the cache when this
process changes a rule, so a change applies at once here and within ``ttl_s`` in other processes.

``ProcessingRules.process`` is the ingest path's ``EventProcessor``. For each event, in order:

1. validation: every enabled validation rule of its type (for any source, or for its source)
   checks the event document. An event that breaks one is kept, marked invalid
   (``metadata.valid = false``, ``metadata.status = "invalid"``, the messages in
   ``metadata.errors``) and neither reshaped nor mapped.
2. reshaping: one rule applies, the newest one for its source, else the newest for any source.
3. mapping: the built-in mapping of its type, then each custom mapping rule, oldest first, onto
   the profile document.

Warnings for the answer say what was refused or skipped, naming the event.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tessera.core.loading_cache import LoadingCache
from tessera.core.patterns import request_budget
from tessera.core.reshaping import check_reshape_rule, reshape
from tessera.model.bounds import DEFAULT_LIMITS, ProfileBudget, ProfileLimits
from tessera.model.event import Event, event_document
from tessera.model.processing import MappingRule, ProcessingRule, ReshapeRule, ValidationRule
from tessera.pipeline.builtin_events import builtin_mapping_rule
from tessera.pipeline.mapping import (
    ConditionHolds,
    apply_mappings,
    check_mapping_rule,
    query_condition,
)
from tessera.pipeline.validation import check_validation_rule, validate_event
from tessera.storage.processing_ports import ProcessingRuleStore


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything that applies to events of one type from one source."""

    validation: tuple[ValidationRule, ...] = ()
    reshaping: ReshapeRule | None = None
    mapping: tuple[MappingRule, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.validation or self.reshaping or self.mapping)


def select_rules(
    rules: Iterable[ProcessingRule], event_type: str, source_id: str | None
) -> RuleSet:
    """The rules (oldest first, as the store lists them) that apply to one source's events."""
    validation: list[ValidationRule] = []
    reshaping_any: ReshapeRule | None = None
    reshaping_own: ReshapeRule | None = None
    builtin = builtin_mapping_rule(event_type)
    mapping: list[MappingRule] = [builtin] if builtin is not None else []
    for rule in rules:
        if not rule.enabled or rule.event_type != event_type:
            continue
        if isinstance(rule, ValidationRule):
            if rule.source_id is None or rule.source_id == source_id:
                validation.append(rule)
        elif isinstance(rule, ReshapeRule):
            # Later (newer) rules replace earlier ones; a rule for this very source wins
            # over one for every source.
            if rule.source_id is None:
                reshaping_any = rule
            elif rule.source_id == source_id:
                reshaping_own = rule
        else:
            mapping.append(rule)
    return RuleSet(tuple(validation), reshaping_own or reshaping_any, tuple(mapping))


def check_rule(rule: ProcessingRule) -> None:
    """Called before a rule is saved: InvalidPayload saying why it cannot be used."""
    if isinstance(rule, ValidationRule):
        check_validation_rule(rule)
    elif isinstance(rule, ReshapeRule):
        check_reshape_rule(rule)
    else:
        check_mapping_rule(rule)


class ProcessingRules:
    # Event types come from clients; past this many cached (tenant, type) entries everything
    # is dropped at once rather than letting a flood of made-up types grow the cache.
    MAX_ENTRIES = 10_000

    def __init__(
        self,
        store: ProcessingRuleStore,
        ttl_s: float,
        *,
        condition_holds: ConditionHolds = query_condition,
        limits: ProfileLimits = DEFAULT_LIMITS,
    ) -> None:
        self.store = store
        self.limits = limits
        self._ttl_s = ttl_s
        self._condition_holds = condition_holds
        self._rules: LoadingCache[tuple[str, str], list[ProcessingRule]] = LoadingCache(
            self._load, ttl_s=ttl_s, max_entries=self.MAX_ENTRIES
        )
        self._sets: dict[tuple[str, str, str | None], tuple[float, RuleSet]] = {}
        # Grows on every forget(); a rule set built from rules read before one is not kept.
        self._generation = 0

    async def for_event(self, tenant: str, source_id: str | None, event_type: str) -> RuleSet:
        key = (tenant, event_type, source_id)
        now = time.monotonic()
        cached = self._sets.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        generation = self._generation
        expires, rules = await self._rules.entry((tenant, event_type))
        selected = select_rules(rules, event_type, source_id)
        # A rule changed while the store was read: use what was read, but do not keep it.
        if generation == self._generation:
            if len(self._sets) >= self.MAX_ENTRIES:
                self._sets.clear()
            # Never outlive the rules it was built from.
            self._sets[key] = (expires, selected)
        return selected

    async def _load(self, key: tuple[str, str]) -> list[ProcessingRule]:
        return await self.store.for_event_type(*key)

    def forget(self, tenant: str | None = None) -> None:
        """Called when this process changes a rule: the next event reads the store again.

        Rule changes are rare, so a change forgets every cached type of the tenant (of every
        tenant without one) rather than working out which types it touched."""
        self._generation += 1
        self._rules.forget(None if tenant is None else (lambda key: key[0] == tenant))
        if tenant is None:
            self._sets.clear()
            return
        for set_key in [key for key in self._sets if key[0] == tenant]:
            del self._sets[set_key]

    async def save(self, rule: ProcessingRule) -> None:
        """Stores the rule; this process applies it from its next event on."""
        await self.store.save(rule)
        self.forget(rule.tenant)

    async def delete(self, tenant: str, kind: type[ProcessingRule], rule_id: str) -> bool:
        deleted = await self.store.delete(tenant, kind, rule_id)
        self.forget(tenant)
        return deleted

    async def process(
        self, events: list[Event], profile: dict[str, Any], session: dict[str, Any]
    ) -> list[str]:
        """The ingest path's EventProcessor: apply the rules to each event in order, changing
        the events, their metadata and the profile document in place; return warnings."""
        warnings: list[str] = []
        # Made at the first mapping: what the request's mappings may still add to the profile.
        budget: ProfileBudget | None = None
        # The request's time for the validation rules' regular expressions (patterns.py).
        with request_budget():
            for event in events:
                source_id = event.source.id if event.source is not None else None
                rules = await self.for_event(event.tenant, source_id, event.type)
                if rules.empty:
                    continue
                if budget is None and rules.mapping:
                    budget = ProfileBudget(profile, self.limits)
                problems: list[str] = []
                document = event_document(event)
                errors = await validate_event(document, rules.validation)
                self.apply(rules, event, document, errors, profile, session, problems, budget)
                warnings.extend(f"event {event.id} ({event.type}): {w}" for w in problems)
        return warnings

    def apply(
        self,
        rules: RuleSet,
        event: Event,
        document: dict[str, Any],
        errors: list[str],
        profile: dict[str, Any],
        session: dict[str, Any],
        warnings: list[str],
        budget: ProfileBudget | None = None,
    ) -> list[str]:
        """One event (``document``, its rules' validation ``errors``) through reshaping and
        mapping, or marked invalid; the changed profile paths."""
        if errors:
            event.metadata.valid = False
            event.metadata.status = "invalid"
            event.metadata.errors.extend(errors)
            warnings.extend(f"invalid, not processed: {error}" for error in errors)
            return []
        if rules.reshaping is not None:
            properties, context = reshape(document, session, rules.reshaping, warnings=warnings)
            event.properties = document["properties"] = properties
            event.context = document["context"] = context
        if not rules.mapping:
            return []
        return apply_mappings(
            document,
            profile,
            rules.mapping,
            session_doc=session,
            condition_holds=self._condition_holds,
            warnings=warnings,
            budget=budget or ProfileBudget(profile, self.limits),
        )
