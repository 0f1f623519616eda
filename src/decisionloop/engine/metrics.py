"""Prometheus metrics of one service instance (its own registry, so tests can run several).

The hot-path series (decisions, rule hits, events, stage latencies) are written for every event,
several times per event. prometheus_client's own Counter and Histogram take a lock and walk their
buckets in Python on each call: about a tenth of the event loop's time under batch load, profiled.
Those series are therefore kept as plain dicts and lists owned by the event-loop thread (the only
writer: the service's hot path runs there, and so does the ``/metrics`` handler that reads them),
and exposed through one custom collector in the standard text format.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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


class LoopCounter:
    """A labelled counter: ``inc(*labels)`` is one dict update, no lock (one writer thread)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.values: Counter[tuple[str, ...]] = Counter()

    def inc(self, *labels: str, amount: int = 1) -> None:
        self.values[labels] += amount

    def total(self) -> int:
        return sum(self.values.values())

    def set_total(self, total: int, *labels: str) -> None:
        """For a count kept elsewhere and read at scrape time (the feature engine's late events)."""
        self.values[labels] = total

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        if not self.labels:
            family.add_metric([], self.values[()])
        for labels, value in sorted(self.values.items()):
            if labels:
                family.add_metric(list(labels), value)
        return family


class Counters(Collector):
    """Loop counters kept outside the service's own collector (cases, monitoring), exposed on
    its registry: ``registry.register(Counters([...]))``."""

    def __init__(self, counters: list[LoopCounter]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        for counter in self.counters:
            yield counter.family()


class LoopHistogram:
    """A histogram with one label: ``observe`` is a bisect and two additions, no lock."""

    def __init__(
        self, name: str, documentation: str, label: str, buckets: tuple[float, ...]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = buckets
        self.series: dict[str, tuple[list[int], list[float]]] = {}  # counts per bucket, [sum]

    def observe(self, label: str, seconds: float) -> None:
        found = self.series.get(label)
        if found is None:
            found = self.series[label] = ([0] * (len(self.bounds) + 1), [0.0])
        found[0][bisect_left(self.bounds, seconds)] += 1
        found[1][0] += seconds

    def count(self, label: str) -> int:
        found = self.series.get(label)
        return sum(found[0]) if found else 0

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for label, (counts, total) in sorted(self.series.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
                cumulative += n
                buckets.append((bound, float(cumulative)))
            family.add_metric([label], buckets, sum_value=total[0])
        return family


class _LoopCollector(Collector):
    def __init__(self, metrics: list[LoopCounter | LoopHistogram]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self.metrics:
            yield metric.family()


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = LoopCounter(
            "decisionloop_events_ingested", "Events made durable", ("event_type",)
        )
        self.duplicates = LoopCounter(
            "decisionloop_duplicate_events", "Repeats of an event_id already stored"
        )
        self.rejected = LoopCounter(
            "decisionloop_rejected_requests", "Requests refused, by error code", ("code",)
        )
        self.decisions = LoopCounter(
            "decisionloop_decisions", "Decisions taken", ("event_type", "outcome")
        )
        self.rule_hits = LoopCounter(
            "decisionloop_rule_hits", "Rules that fired (shadow included)", ("rule", "shadow")
        )
        self.latency = LoopHistogram(
            "decisionloop_decision_seconds", "Decision latency by stage", "stage", LATENCY_BUCKETS
        )
        self.labels_attached = LoopCounter(
            "decisionloop_rule_labels_attached", "Risk labels attached by rules", ("label",)
        )
        self.label_failures = LoopCounter(
            "decisionloop_rule_label_failures", "Rule labels that could not be stored"
        )
        self.late_events = LoopCounter(
            "decisionloop_late_events",
            "Events older than the features' allowed lateness: stored and decided, but their "
            "features may differ from the offline ones (see docs/concepts.md)",
        )
        self.model_degraded = LoopCounter(
            "decisionloop_model_degraded_decisions",
            "Decisions taken rules-only because a model could not score (missing artifact, "
            "error); copied from DecisionEngine.model_degraded at scrape time",
            ("model",),
        )
        self.rebuild_skipped = LoopCounter(
            "decisionloop_rebuild_skipped_events",
            "Stored events that no longer validate and were skipped when rebuilding state",
        )
        self.registry.register(
            _LoopCollector(
                [
                    self.events,
                    self.duplicates,
                    self.rejected,
                    self.decisions,
                    self.rule_hits,
                    self.labels_attached,
                    self.label_failures,
                    self.late_events,
                    self.latency,
                    self.rebuild_skipped,
                    self.model_degraded,
                ]
            )
        )
        # Memory, CPU and garbage-collector series of the process, as operators expect them.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.entities = Gauge(
            "decisionloop_online_entities",
            "Entity states held by online features",
            registry=self.registry,
        )
        self.group_commits = Gauge(
            "decisionloop_source_group_commits",
            "Group commits (journal fsyncs) done by the source layer",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
