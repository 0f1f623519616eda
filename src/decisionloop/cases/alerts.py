"""Alerts from the decision path: which decisions open one, and storing them after durability.

A decision opens an alert when its outcome is one of ``alert_outcomes`` (default: ``review``) or
when a firing, non-shadow rule asks for one (``alert: true`` or a ``queue:`` in its definition).
:meth:`AlertHook.alert_for` decides that on the event loop while the decision is taken (a set
lookup per fired rule); the service stores the alerts only once the decisions are durable, in one
transaction per request in a worker thread, as it attaches rule labels. A store failure is logged
and counted (``decisionloop_case_alert_failures_total``); the decisions stand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from decisionloop.cases.service import CaseService
from decisionloop.cases.store import NewAlert
from decisionloop.domain.decisions import Decision
from decisionloop.domain.events import Event
from decisionloop.engine.engine import DecisionEngine
from decisionloop.engine.metrics import Counters, LoopCounter
from decisionloop.project.definitions import RuleSpec

log = logging.getLogger(__name__)


class AlertHook:
    """What the decision service calls: ``alert_for`` per decision, ``store`` once durable."""

    def __init__(self, cases: CaseService, registry: CollectorRegistry | None = None) -> None:
        self.cases = cases
        self.outcomes = frozenset(cases.config.alert_outcomes)
        self.opened = LoopCounter(
            "decisionloop_case_alerts", "Alerts stored from decisions", ("queue",)
        )
        self.failures = LoopCounter(
            "decisionloop_case_alert_failures", "Decision alerts that could not be stored"
        )
        if registry is not None:
            registry.register(Counters([self.opened, self.failures]))
        self._asking: dict[str, dict[str, RuleSpec]] = {}  # strategy version -> alerting rules

    def alert_for(
        self, event: Event, decision: Decision, engine: DecisionEngine
    ) -> NewAlert | None:
        """The alert this decision opens, or None. Runs on the event loop: cheap when none."""
        by_outcome = decision.outcome in self.outcomes
        if not by_outcome and not decision.reasons:
            return None
        strategy = engine.strategies[event.type]
        asking = self._asking.get(strategy.version)
        if asking is None:
            asking = {r.spec.id: r.spec for r in strategy.rules if r.spec.opens_alert}
            self._asking[strategy.version] = asking
        fired = [r.id for r in decision.reasons if r.kind == "rule" and not r.shadow]
        alerting = [asking[rule_id] for rule_id in fired if rule_id in asking]
        if not by_outcome and not alerting:
            return None
        config = self.cases.config
        queue = next((r.queue for r in alerting if r.queue), None) or config.default_queue
        event_type = engine.catalog.types[event.type]
        entity_type, entity_id = config.case_entity_of(event_type, event.values, event.event_id)
        return NewAlert(
            dedup_key=f"decision:{event.event_id}",
            source="decision",
            event_id=event.event_id,
            event_type=event.type,
            occurred_at=event.occurred_at,
            entity_type=entity_type,
            entity_id=entity_id,
            queue=queue,
            priority=config.priority(decision.outcome),
            rule_ids=tuple(fired),
            decision_id=decision.decision_id,
            outcome=decision.outcome,
            score=decision.score,
        )

    async def store(self, alerts: Sequence[NewAlert]) -> None:
        """After durability: one transaction for the request's alerts; never raises."""
        if not alerts:
            return
        try:
            opened = await asyncio.to_thread(self.cases.open_alerts, alerts)
        except Exception:
            log.exception("storing %d case alert(s) failed", len(alerts))
            self.failures.inc(amount=len(alerts))
            return
        for alert in opened.alerts:
            self.opened.inc(alert.new.queue)
