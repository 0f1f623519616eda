"""Models in the decision path: active thresholds decide, shadow models only record, a model that
cannot score leaves a degraded rules-only decision; the CLI trains and lists."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from decisionloop.cli.main import app
from decisionloop.engine.engine import DecisionEngine, build_engine, compile_project
from decisionloop.errors import DefinitionError
from decisionloop.ml.train import LightGBMEstimator, fit_and_register
from decisionloop.ml.training import training_frame
from decisionloop.project.loader import load_project
from decisionloop.project.scaffold import init_project
from decisionloop.storage.duckdb_source import DuckDBSourceLog
from decisionloop.storage.ports import Record
from tests.conftest import transaction
from tests.test_ml_training import T0, history

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STRATEGY = """
event_type: transaction
outcomes: [approve, challenge, review, decline]
rule_sets: [fraud]
thresholds:
  - {score: 50, outcome: review}
  - {score: 90, outcome: decline}
models:
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An example project with model fraud_gbm v1 trained on synthetic history."""
    folder = tmp_path_factory.mktemp("engine") / "project"
    init_project(folder)
    project = load_project(folder)
    frame = training_frame(history(project), project, "transaction")
    fit_and_register(frame, project, "fraud_gbm", LightGBMEstimator(trees=40, min_child_samples=5))
    return folder


def attach(root: Path, models: str) -> DecisionEngine:
    (root / "strategies" / "transaction.yaml").write_text(STRATEGY + models)
    return compile_project(root)[1]


def decide(engine: DecisionEngine, **fields: Any) -> Any:
    raw = transaction("e1", occurred_at=(T0 + timedelta(days=30)).isoformat(), **fields)
    return engine.decide(engine.catalog.validate(raw))


def model_reasons(decision: Any) -> list[Any]:
    return [r for r in decision.reasons if r.kind == "model"]


def test_an_active_model_decides_with_its_thresholds(root: Path) -> None:
    engine = attach(
        root,
        "  - {name: fraud_gbm, version: 1, status: active, contributions: 2,\n"
        "     thresholds: [{score: 0.0, outcome: decline}]}\n",
    )
    decision = decide(engine)
    (reason,) = model_reasons(decision)
    assert decision.outcome == "decline"  # every probability is >= 0.0
    assert reason.id == "fraud_gbm@v1"
    assert reason.outcome == "decline"
    assert not reason.shadow
    assert 0.0 < reason.score < 1.0
    assert reason.values["form"] == "walker"
    assert 1 <= len([k for k in reason.values if k.startswith("contribution:")]) <= 2
    assert "model" in decision.trace_us
    assert engine.model_degraded.total() == 0


def test_a_shadow_model_is_recorded_without_effect(root: Path) -> None:
    engine = attach(
        root,
        "  - {name: fraud_gbm, version: 1, status: shadow,\n"
        "     thresholds: [{score: 0.0, outcome: decline}]}\n",
    )
    decision = decide(engine)
    (reason,) = model_reasons(decision)
    assert reason.shadow
    assert decision.outcome == "approve"


def test_the_engine_serves_the_walker_identical_to_booster_predict(root: Path) -> None:
    from decisionloop.ml.registry import ModelRegistry
    from decisionloop.ml.serving import BoosterScorer

    engine = attach(root, "  - {name: fraud_gbm, version: 1, status: shadow}\n")
    models = engine.strategies["transaction"].models
    assert models is not None
    scorer = models.models[0].scorer
    assert scorer is not None
    assert scorer.form == "walker"
    version = ModelRegistry(root).get("fraud_gbm", 1)
    booster = BoosterScorer(version.load(), version.feature_names)
    for amount in (5.0, 40.0, 900.0, 2500.0):
        row = {"amount": amount, "customer.debit_count_1h": amount % 7, "balance_before": None}
        assert scorer.score(row, 0).probability == booster.score(row, 0).probability


def test_a_missing_model_degrades_to_rules_only(root: Path) -> None:
    engine = attach(
        root,
        "  - {name: fraud_gbm, version: 7, status: active,\n"
        "     thresholds: [{score: 0.0, outcome: decline}]}\n",
    )
    decision = decide(engine)
    (reason,) = model_reasons(decision)
    assert decision.outcome == "approve"  # the rules' outcome
    assert reason.values["degraded"] is True
    assert "fraud_gbm v7" in reason.description
    assert engine.model_degraded == {"fraud_gbm@v7": 1}


def test_a_model_that_raises_degrades_the_decision(root: Path) -> None:
    engine = attach(
        root,
        "  - {name: fraud_gbm, version: 1, status: active,\n"
        "     thresholds: [{score: 0.0, outcome: decline}]}\n",
    )
    decision = decide(engine, amount=10.0)
    assert decision.outcome == "decline"
    models = engine.strategies["transaction"].models
    assert models is not None

    class Broken:
        form = "broken"
        feature_names = ("amount",)

        def score(self, row: Any, top: int) -> Any:
            raise RuntimeError("boom")

    models.models[0].scorer = Broken()
    decision = decide(engine, amount=10.0)
    (reason,) = model_reasons(decision)
    assert reason.values["degraded"] is True
    assert "boom" in reason.values["error"]
    assert decision.outcome == "approve"
    assert engine.model_degraded == {"fraud_gbm@v1": 1}


def test_a_score_over_its_time_budget_is_discarded(root: Path) -> None:
    engine = attach(
        root,
        "  - {name: fraud_gbm, version: 1, status: active, timeout_ms: 20,\n"
        "     thresholds: [{score: 0.0, outcome: decline}]}\n",
    )
    assert decide(engine, amount=10.0).outcome == "decline"  # in time: the model decides
    models = engine.strategies["transaction"].models
    assert models is not None
    scorer = models.models[0].scorer
    assert scorer is not None

    class Slow:
        form = "slow"
        feature_names = scorer.feature_names

        def score(self, row: Any, top: int) -> Any:
            time.sleep(0.05)  # 50 ms against a 20 ms budget
            return scorer.score(row, top)

    models.models[0].scorer = Slow()
    decision = decide(engine, amount=10.0)
    (reason,) = model_reasons(decision)
    assert decision.outcome == "approve"  # rules-only: the late score is not acted on
    assert reason.values["degraded"] is True
    assert reason.values["error"].startswith("timed out: ")
    assert engine.model_degraded == {"fraud_gbm@v1": 1}


def test_retired_models_are_not_loaded(root: Path) -> None:
    engine = attach(root, "  - {name: fraud_gbm, version: 9, status: retired}\n")
    assert engine.strategies["transaction"].models is None
    assert model_reasons(decide(engine)) == []


def test_model_entries_are_validated_with_file_and_line(root: Path) -> None:
    path = root / "strategies" / "transaction.yaml"
    path.write_text(
        STRATEGY
        + "  - {name: fraud_gbm, version: 1, status: paused}\n"
        + "  - {name: Bad Name, version: 0}\n"
    )
    with pytest.raises(DefinitionError) as caught:
        compile_project(root)
    found = {(p.file, p.line) for p in caught.value.problems}
    assert found == {("strategies/transaction.yaml", 9), ("strategies/transaction.yaml", 10)}
    assert len(caught.value.problems) == 3  # status; name and version
    path.write_text(
        STRATEGY
        + "  - {name: fraud_gbm, version: 1, thresholds: [{score: 0.5, outcome: block}]}\n"
        + "  - {name: fraud_gbm, version: 1}\n"
    )
    with pytest.raises(DefinitionError) as caught:
        compile_project(root)
    reasons = {(p.line, p.reason) for p in caught.value.problems}
    assert reasons == {
        (9, "outcome 'block' is not declared in `outcomes`"),
        (10, "model fraud_gbm v1 listed twice"),
    }
    path.write_text(STRATEGY + "  []\n")
    assert build_engine(load_project(root)).strategies["transaction"].models is None


def test_train_and_list_from_the_command_line(tmp_path: Path) -> None:
    project_dir = tmp_path / "project"
    init_project(project_dir)
    data_dir = tmp_path / "state"
    source = DuckDBSourceLog(data_dir / "source.duckdb")
    connection = history(load_project(project_dir), days=4)
    rows = connection.execute(
        "SELECT event_id, event_type, epoch_us(occurred_at), payload FROM events ORDER BY seq"
    ).fetchall()
    records = [
        Record(event_id, event_type, at, at, payload.encode())
        for event_id, event_type, micros, payload in rows
        for at in [EPOCH + timedelta(microseconds=micros)]
    ]
    source.submit(records).result()
    source.close()
    runner = CliRunner()
    common = ["--project", str(project_dir), "--data-dir", str(data_dir)]
    result = runner.invoke(
        app,
        [
            "train",
            "--name",
            "cli_model",
            "--from",
            "2026-06-01",
            "--to",
            "2026-06-04",
            "--trees",
            "20",
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "registered" in result.output
    assert (project_dir / "models" / "cli_model" / "v1" / "model.json").is_file()
    listed = runner.invoke(app, ["models", "list", "--project", str(project_dir)])
    assert listed.exit_code == 0, listed.output
    assert "cli_model v1" in listed.output
    bad = runner.invoke(
        app, ["train", "--name", "x", "--from", "June", "--to", "2026-06-04", *common]
    )
    assert bad.exit_code == 2
    assert "not a date" in bad.output
