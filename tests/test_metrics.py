"""The loop-owned metrics render as standard Prometheus text that a parser reads back."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from decisionloop.engine.metrics import LATENCY_BUCKETS, ServiceMetrics


def parsed(metrics: ServiceMetrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    families = text_string_to_metric_families(metrics.render().decode())
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in families}


def test_counters_and_histogram_round_trip() -> None:
    metrics = ServiceMetrics()
    metrics.decisions.inc("transaction", "decline")
    metrics.decisions.inc("transaction", "decline")
    metrics.decisions.inc("transaction", "approve")
    metrics.duplicates.inc(amount=3)
    for seconds in (0.00005, 0.0003, 0.0003, 0.002, 5.0):
        metrics.latency.observe("rules", seconds)
    found = parsed(metrics)

    decisions = {
        tuple(sorted(labels.items())): v for _, labels, v in found["decisionloop_decisions"]
    }
    assert decisions[(("event_type", "transaction"), ("outcome", "decline"))] == 2
    assert decisions[(("event_type", "transaction"), ("outcome", "approve"))] == 1
    assert found["decisionloop_duplicate_events"] == [
        ("decisionloop_duplicate_events_total", {}, 3)
    ]

    samples = found["decisionloop_decision_seconds"]
    buckets = {labels["le"]: v for name, labels, v in samples if name.endswith("_bucket")}
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets["0.0001"] == 1  # 50 us
    assert buckets["0.0005"] == 3  # and the two of 300 us
    assert buckets["0.0025"] == 4
    assert buckets["1.0"] == 4
    assert buckets["+Inf"] == 5  # 5 s is above every bound
    totals = {name: v for name, _, v in samples if not name.endswith("_bucket")}
    assert totals["decisionloop_decision_seconds_count"] == 5
    assert abs(totals["decisionloop_decision_seconds_sum"] - 5.00265) < 1e-9


def test_a_value_on_a_bound_falls_in_that_bucket() -> None:
    metrics = ServiceMetrics()
    metrics.latency.observe("persist", 0.001)  # Prometheus buckets are "less than or equal"
    samples = parsed(metrics)["decisionloop_decision_seconds"]
    buckets = {labels["le"]: v for name, labels, v in samples if name.endswith("_bucket")}
    assert buckets["0.0005"] == 0
    assert buckets["0.001"] == 1
