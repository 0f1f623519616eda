"""Smoke test of ``benchmarks.decide``'s in-process part and its rules for peers: tiny sizes, no
time asserted (benchmarks are commands; this only keeps them running)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.decide import STAGES, build_workload, in_process
from benchmarks.peers import decision_rows, naive_loop, peer_row


def test_decide_in_process_runs_and_peers_agree(tmp_path: Path) -> None:
    workload = build_workload(tmp_path, customers=40, days=4, live_days=1, rules=60, trees=0)
    assert workload.facts["rules"] == len(workload.rule_ids) == len(workload.peer_rules) == 60
    assert workload.facts["features"] == 50

    result = in_process(workload, warmup=5)
    assert result["decisions"] > 0
    assert set(result["stages_us"]) == set(STAGES)
    assert result["total_us"]["p50"] is not None
    assert (
        sum(v for k, v in result["checks"].items() if k.startswith("outcome:"))
        == (result["decisions"])
    )

    # The naive loop over the peers' form of the rules fires exactly what the engine fires.
    engine, rows = decision_rows(workload, 200)
    strategy = engine.strategies["transaction"]
    assert [r.spec.id for r in strategy.rules] == workload.rule_ids
    evaluate = naive_loop(workload.peer_rules)
    for row in rows:
        ours = [i for i, rule in enumerate(strategy.rules) if rule in strategy.evaluate(row)]
        assert evaluate(peer_row(row, engine)) == ours
