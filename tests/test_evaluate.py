"""``decisionloop evaluate`` end to end on a small seeded bank stored by the service.

Twelve days of card payments by 60 customers. Each day two customers are compromised: their
fraudulent payments come in bursts of online payments of middling amounts (the rule ``big``, at
1,000 and above, misses most of them), while ``big`` also fires on a few honest large payments.
Labels arrive a day later. The protocol (train 6 days, delay 2, test 4) is checked against the
frame it was given, and the learnt model must rank the test frauds better than the rules do.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from decisionloop.errors import InputError, NotFoundError
from decisionloop.ml.evaluate import evaluate
from decisionloop.ml.prequential import Protocol
from decisionloop.project.loader import load_project
from decisionloop.rules.report import strategy_scores
from decisionloop.runtime import open_service
from decisionloop.settings import load_settings
from tests.conftest import cli, plain

PROJECT = {
    "project.yaml": "name: ev\n",
    "entities.yaml": "entities:\n  customer: {key: customer_id}\n",
    "events/core.yaml": """
event_types:
  payment:
    entities: {customer: required}
    fields:
      amount: {type: number, required: true}
      channel: {type: enum, required: true, values: [card, online]}
  label:
    fields:
      entity_type: {type: enum, required: true, values: [event]}
      entity_id: {type: string, required: true}
      label: {type: string, required: true}
""",
    "features/velocity.yaml": """
features:
  - {name: online, entity: customer, aggregation: count, windows: [1h],
     event_types: [payment], filter: "channel = 'online'"}
  - {name: spent, entity: customer, aggregation: sum, field: amount, windows: [1h],
     event_types: [payment]}
""",
    "rules/core.yaml": """
name: core
rules:
  - {id: big, when: amount >= 1000, outcome: review, score: 40}
""",
    "strategies/payment.yaml": "event_type: payment\nrule_sets: [core]\n",
}
START = datetime(2026, 3, 1, tzinfo=UTC)
PROTOCOL = Protocol(train_start=START.date(), train_days=6, delay_days=2, test_days=4, top_k=3)


def bank_events(seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    n = 0
    for day in range(12):
        compromised = set(rng.sample(range(60), 2))
        for customer in range(60):
            for _ in range(rng.randint(1, 3)):
                at = START + timedelta(days=day, seconds=rng.randint(0, 86_399))
                amount = round(rng.lognormvariate(3.5, 0.8), 2)
                if rng.random() < 0.02:
                    amount = 1500.0  # an honest large payment: ``big`` fires, wrongly
                events.append(payment(f"p{n}", at, customer, amount, "card"))
                n += 1
            if customer in compromised:
                at = START + timedelta(days=day, seconds=rng.randint(0, 80_000))
                for burst in range(4):
                    amount = 1200.0 if burst == 0 and rng.random() < 0.3 else 400.0 + burst
                    moment = at + timedelta(minutes=3 * burst)
                    events.append(payment(f"p{n}", moment, customer, amount, "online"))
                    labels.append(
                        {
                            "event_id": f"l{n}",
                            "type": "label",
                            "occurred_at": (moment + timedelta(days=1)).isoformat(),
                            "entity_type": "event",
                            "entity_id": f"p{n}",
                            "label": "fraud",
                        }
                    )
                    n += 1
    return sorted(events + labels, key=lambda e: e["occurred_at"])


def payment(event_id: str, at: datetime, customer: int, amount: float, channel: str) -> Any:
    return {
        "event_id": event_id,
        "type": "payment",
        "occurred_at": at.isoformat(),
        "customer_id": f"C{customer}",
        "amount": amount,
        "channel": channel,
    }


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    project = root / "project"
    for name, text in PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    settings = load_settings(project_dir=project, data_dir=root / "state", max_future_skew_s=10**9)
    service = open_service(settings)
    try:
        service.handle_sync(bank_events(), "stream")
    finally:
        service.close()
    source = settings.source_path()
    assert source is not None
    return project, source


def test_the_model_beats_the_rules_on_the_later_days(bank: tuple[Path, Path]) -> None:
    project, source = bank
    with duckdb.connect(str(source), read_only=True) as conn:
        result = evaluate(conn, load_project(project), PROTOCOL, entity="customer_id")
    rules, model, both = (result.results[k] for k in ("rules", "model", "rules+model"))
    # The same test events for all three rankings.
    assert rules.events == model.events == both.events > 0
    assert rules.frauds == model.frauds > 0
    # Two compromised customers a day over 6 training days, minus repeats.
    assert 0 < result.known_before[0] <= 12
    assert result.known_before == sorted(result.known_before)
    assert model.average_precision is not None
    assert rules.average_precision is not None
    assert model.average_precision > rules.average_precision
    assert model.precision_at_k > rules.precision_at_k
    # Every payment of the four test days gets a prediction.
    test_start = START + timedelta(days=8)
    with duckdb.connect(str(source), read_only=True) as conn:
        (expected,) = conn.execute(
            "SELECT count(*) FROM events WHERE event_type = 'payment' AND occurred_at >= ? "
            "AND occurred_at < ?",
            [test_start, test_start + timedelta(days=4)],
        ).fetchone() or (0,)
    assert result.predictions.height == expected


def test_rules_scores_are_what_the_strategy_decides(bank: tuple[Path, Path]) -> None:
    project, source = bank
    with duckdb.connect(str(source), read_only=True) as conn:
        scores = strategy_scores(
            conn, load_project(project), "payment", START, START + timedelta(days=12)
        )
        amounts = dict(
            conn.execute(
                "SELECT event_id, CAST(payload->>'$.amount' AS DOUBLE) FROM events "
                "WHERE event_type = 'payment'"
            ).fetchall()
        )
    review = ["approve", "challenge", "review", "decline"].index("review")
    for row in scores.iter_rows(named=True):
        big = amounts[row["event_id"]] >= 1000
        assert row["rules_severity"] == (review if big else 0)
        assert row["rules_score"] == (40.0 if big else 0.0)


def test_bad_requests_are_explained(bank: tuple[Path, Path]) -> None:
    project, source = bank
    with (
        duckdb.connect(str(source), read_only=True) as conn,
        pytest.raises(InputError) as unknown,
    ):
        evaluate(conn, load_project(project), PROTOCOL, entity="card_id")
    assert unknown.value.problems[0].where == "--entity"
    early = Protocol(train_start=date(2025, 1, 1), train_days=3, delay_days=1, test_days=1)
    with (
        duckdb.connect(str(source), read_only=True) as conn,
        pytest.raises(NotFoundError, match="nothing to learn"),
    ):
        evaluate(conn, load_project(project), early, entity="customer_id")


def test_the_command_prints_the_three_rankings_and_writes_predictions(
    bank: tuple[Path, Path], tmp_path: Path
) -> None:
    project, source = bank
    predictions = tmp_path / "predictions.csv"
    result = cli(
        "evaluate",
        "--project",
        str(project),
        "--data-dir",
        str(source.parent),
        "--train-start",
        "2026-03-01",
        "--train-days",
        "6",
        "--delay-days",
        "2",
        "--test-days",
        "4",
        "--entity",
        "customer_id",
        "--top-k",
        "3",
        "--predictions",
        str(predictions),
        "--event-type",
        "payment",
    )
    assert result.exit_code == 0, plain(result.output)
    text = plain(result.output)
    for name in ("rules", "model", "rules+model", "precision@3"):
        assert name in text
    lines = predictions.read_text().splitlines()
    assert lines[0] == "event_id,score"
    assert len(lines) > 1
