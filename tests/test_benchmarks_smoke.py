"""Smoke test of ``benchmarks.decide``'s in-process part and its rules for peers: tiny sizes, no
time asserted (benchmarks are commands; this only keeps them running)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
from benchmarks.decide import STAGES, build_workload, in_process, outcome_mix
from benchmarks.loadgen import Replay
from benchmarks.peers import decision_rows, naive_loop, peer_row


def test_decide_in_process_runs_and_peers_agree(tmp_path: Path) -> None:
    workload = build_workload(
        tmp_path, customers=40, days=4, live_days=1, replay_days=2, rules=60, trees=0
    )
    assert workload.facts["rules"] == len(workload.rule_ids) == len(workload.peer_rules) == 60
    assert workload.facts["features"] == 50

    # The HTTP replay: live transactions as recorded, after the history, in event-time order,
    # none dated ahead of now (the service would refuse them), more than in-process decides.
    replayed = [orjson.loads(line) for line in workload.replay_file.read_bytes().splitlines()]
    assert len(replayed) == workload.facts["replay_transactions"]
    assert len(replayed) > workload.facts["live_transactions"] > 0
    times = [e["occurred_at"] for e in replayed]
    assert times == sorted(times)
    assert workload.facts["history_end"] <= times[0]
    assert times[-1] <= datetime.now(UTC).isoformat()
    assert {e["type"] for e in replayed} == {"transaction"}
    assert len({e["event_id"] for e in replayed}) == len(replayed)

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


def test_loadgen_replay_slices_without_repeats(tmp_path: Path) -> None:
    """Consecutive runs' slices of a replay cover the file once, in order, bodies as recorded."""
    path = tmp_path / "replay.jsonl"
    events = [
        {"event_id": f"e{i}", "occurred_at": f"2026-01-01T00:{i:02d}:00+00:00"} for i in range(10)
    ]
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    single = Replay(path, 0, 1)
    assert single.requests == 10
    assert orjson.loads(single.body("decide", 2)) == events[2]
    first = single.summary(sent=3, short=False)
    assert first["events_sent"] == 3
    assert not first["exhausted"]
    batch = Replay(path, first["events_sent"], 3)  # the next run starts where the last stopped
    assert batch.requests == 2  # 7 events left: two whole batches of 3
    assert orjson.loads(batch.body("batch", 1)) == events[6:9]
    second = batch.summary(sent=2, short=False)
    assert second["exhausted"]
    assert second["first"] == 3
    assert second["events_sent"] == 6
    assert second["first_occurred_at"] == events[3]["occurred_at"]
    assert second["last_occurred_at"] == events[8]["occurred_at"]
    assert outcome_mix({"approve": 3, "review": 1}) == {
        "approve": 0.75,
        "challenge": 0.0,
        "review": 0.25,
        "decline": 0.0,
    }
