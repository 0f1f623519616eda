"""Prometheus metrics of one service instance (its own registry, so tests can run several)."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the output for little use

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "decisionloop_events_ingested", "Events made durable", ["event_type"], registry=r
        )
        self.duplicates = Counter(
            "decisionloop_duplicate_events", "Repeats of an event_id already stored", registry=r
        )
        self.rejected = Counter(
            "decisionloop_rejected_requests",
            "Requests refused, by error code",
            ["code"],
            registry=r,
        )
        self.decisions = Counter(
            "decisionloop_decisions", "Decisions taken", ["event_type", "outcome"], registry=r
        )
        self.rule_hits = Counter(
            "decisionloop_rule_hits",
            "Rules that fired (shadow included)",
            ["rule", "shadow"],
            registry=r,
        )
        self.latency = Histogram(
            "decisionloop_decision_seconds",
            "Decision latency by stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rebuild_skipped = Counter(
            "decisionloop_rebuild_skipped_events",
            "Stored events that no longer validate and were skipped when rebuilding state",
            registry=r,
        )
        self.entities = Gauge(
            "decisionloop_online_entities", "Entity states held by online features", registry=r
        )
        self.group_commits = Gauge(
            "decisionloop_source_group_commits",
            "Group commits done by the source writer",
            registry=r,
        )

        self._children: dict[tuple[object, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """A labelled series, cached: ``labels()`` costs a lock and a lookup on every call."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
