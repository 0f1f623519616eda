"""The prequential protocol on a hand-made dataset whose metrics are worked out by hand below."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from decisionloop.ml.prequential import Protocol, score, split

START = date(2026, 1, 1)
# (day, hour, entity, score, label). Training: days 0-1; delay: day 2; test: days 3, 4, 5.
ROWS = [
    (0, 10, "A", 0.0, 1),  # A is compromised in the training window: never tested
    (1, 10, "B", 0.0, 0),
    (2, 10, "C", 0.0, 1),  # delay day: known from test day 1 on
    (2, 11, "F", 0.0, 1),
    # test day 0 (day 3): only A is known. Entity maxima: C .8 (fraud), B .7, D .6 (fraud on its
    # .1 event), E .5 -> top 2 = C, B -> precision 1/2; C is detected.
    (3, 9, "A", 0.9, 1),
    (3, 10, "C", 0.8, 1),
    (3, 11, "B", 0.7, 0),
    (3, 12, "D", 0.6, 0),
    (3, 13, "D", 0.1, 1),
    (3, 14, "E", 0.5, 0),
    # test day 1 (day 4): the delay day's frauds are known now (C, F). Left: D .4 (fraud),
    # E .35 (fraud), B .2 -> top 2 = D, E -> precision 2/2.
    (4, 9, "F", 0.95, 1),
    (4, 10, "C", 0.9, 1),
    (4, 11, "D", 0.4, 1),
    (4, 12, "E", 0.35, 1),
    (4, 13, "B", 0.2, 0),
    # test day 2 (day 5): day 3's labels have arrived too (D known); E was detected on day 4.
    # Left: B .15 (fraud) -> 1 of K=2 -> precision 1/2 (divided by K, not by what is left).
    (5, 9, "D", 0.8, 0),
    (5, 10, "E", 0.9, 1),
    (5, 11, "B", 0.15, 1),
    (6, 10, "B", 0.99, 1),  # after the test window: ignored
]


def frame() -> pl.DataFrame:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(ROWS))],
            "occurred_at": [base + timedelta(days=d, hours=h) for d, h, *_ in ROWS],
            "customer_id": [r[2] for r in ROWS],
            "score": [r[3] for r in ROWS],
            "label": [r[4] for r in ROWS],
        }
    )


PROTOCOL = Protocol(train_start=START, train_days=2, delay_days=1, test_days=3, top_k=2)


def test_the_split_removes_known_entities_day_by_day() -> None:
    parts = split(frame(), PROTOCOL, "customer_id")
    assert parts.train["event_id"].to_list() == ["e0", "e1"]
    assert parts.known_before == [1, 3, 4]  # {A}, {A, C, F}, {A, C, F, D}
    by_day = {d: parts.test.filter(pl.col("day") == d)["customer_id"].to_list() for d in range(3)}
    assert by_day == {0: ["C", "B", "D", "D", "E"], 1: ["D", "E", "B"], 2: ["E", "B"]}


def test_metrics_match_the_hand_computation() -> None:
    parts = split(frame(), PROTOCOL, "customer_id")
    metrics = score(parts.test, "customer_id", "score", PROTOCOL.top_k)
    assert metrics.precision_at_k_per_day == [0.5, 1.0, 0.5]
    assert metrics.precision_at_k == pytest.approx(2.0 / 3.0)
    # Events left (detected E is still an event of day 2 for AUC/AP; only precision@K drops it):
    # .8/1 .7/0 .6/0 .5/0 .1/1 | .4/1 .35/1 .2/0 | .9/1 .15/1.
    # AUC: pairs (positive above negative) over 6 positives x 4 negatives.
    # .9 and .8 beat all 4; .4 and .35 beat .2; .15 and .1 beat none -> (4+4+1+1) / 24.
    assert metrics.roc_auc == pytest.approx(10 / 24)
    # AP over the ranking .9(1) .8(1) .7 .6 .5 .4(1) .35(1) .2 .15(1) .1(1):
    # precision at each positive: 1/1, 2/2, 3/6, 4/7, 5/9, 6/10.
    expected_ap = (1 + 1 + 3 / 6 + 4 / 7 + 5 / 9 + 6 / 10) / 6
    assert metrics.average_precision == pytest.approx(expected_ap)
    assert (metrics.events, metrics.frauds) == (10, 6)


def test_without_the_delay_rule_the_known_fraudster_would_top_day_one() -> None:
    """The removal matters: scored naively, F (.95) and C (.9) would fill day 1's top 2."""
    parts = split(frame(), PROTOCOL, "customer_id")
    assert "F" not in parts.test.filter(pl.col("day") == 1)["customer_id"].to_list()


def test_single_class_test_days_report_no_auc() -> None:
    only_legit = frame().with_columns(pl.lit(0).alias("label"))
    metrics = score(split(only_legit, PROTOCOL, "customer_id").test, "customer_id", "score", 2)
    assert metrics.roc_auc is None
    assert metrics.average_precision is None
    assert metrics.precision_at_k == 0.0


@pytest.mark.parametrize("bad", [{"train_days": 0}, {"test_days": 0}, {"delay_days": -1}])
def test_a_protocol_with_empty_windows_is_refused(bad: dict[str, int]) -> None:
    args = {"train_start": START, "train_days": 2, "delay_days": 1, "test_days": 3, **bad}
    with pytest.raises(ValueError, match="must"):
        Protocol(**args)  # type: ignore[arg-type]
