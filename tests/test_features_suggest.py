"""``decisionloop features suggest``: a starter file that compiles, or nothing written."""

from __future__ import annotations

from pathlib import Path

from decisionloop.engine.engine import compile_project
from decisionloop.features.suggest import suggest_features
from decisionloop.ml.training import model_inputs
from decisionloop.project.loader import load_project
from tests.conftest import cli, plain

ENTITIES = ["customer", "account", "device", "ip", "merchant", "terminal", "payee"]


def test_the_suggestion_compiles_with_predictable_names(project_dir: Path) -> None:
    before = set(compile_project(project_dir)[1].features.names)
    result = cli("features", "suggest", "--project", project_dir)
    assert result.exit_code == 0, plain(result.output)
    written = project_dir / "features" / "suggested.yaml"
    assert written.exists()
    _, engine = compile_project(project_dir)
    added = set(engine.features.names) - before
    expected = {
        f"{entity}.{name}_{window}"
        for entity in ENTITIES
        for name in ("txn_count", "amount_sum", "amount_avg", "fraud_rate")
        for window in ("1d", "7d", "30d")
    }
    expected |= {"txn_hour_of_day", "txn_is_weekend"}
    expected |= {f"amount_vs_{entity}_avg_30d" for entity in ENTITIES}
    assert added == expected
    rates = [f for f in load_project(project_dir).features if f.name == "fraud_rate"]
    assert {f.label_delay for f in rates} == {"7d"}  # windows end a feedback delay ago
    inputs = model_inputs(load_project(project_dir), "transaction")
    assert "customer.fraud_rate_30d" in inputs
    assert "txn_is_weekend" in inputs
    assert "amount_vs_merchant_avg_30d" in inputs
    again = cli("features", "suggest", "--project", project_dir)
    assert again.exit_code == 2
    assert "--force" in plain(again.output)


def test_a_suggestion_that_would_break_the_project_is_not_written(project_dir: Path) -> None:
    # A hand-written customer.amount_sum_1d already exists: the template's would clash.
    (project_dir / "features" / "mine.yaml").write_text(
        "features:\n"
        "  - {name: amount_sum, entity: customer, aggregation: sum, field: amount,\n"
        "     windows: [1d], event_types: [transaction]}\n"
    )
    result = cli("features", "suggest", "--project", project_dir)
    assert result.exit_code == 2
    assert "customer.amount_sum_1d" in plain(result.output)
    assert not (project_dir / "features" / "suggested.yaml").exists()


def test_without_label_events_there_are_no_label_rates(tmp_path: Path) -> None:
    files = {
        "project.yaml": "name: small\n",
        "entities.yaml": "entities:\n  customer: {key: customer_id}\n",
        "events/core.yaml": (
            "event_types:\n  payment:\n    entities: {customer: required}\n"
            "    fields:\n      value: {type: integer, required: true}\n"
        ),
        "strategies/payment.yaml": "event_type: payment\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    suggestion = suggest_features(load_project(tmp_path))
    assert suggestion.label is None
    assert "labelled_share" not in suggestion.text
    assert suggestion.amount_field == "value"  # the first numeric field when there is no amount
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "suggested.yaml").write_text(suggestion.text)
    _, engine = compile_project(tmp_path)
    assert "customer.value_avg_30d" in engine.features.names


def test_the_label_delay_is_configurable(project_dir: Path) -> None:
    project = load_project(project_dir)
    assert "label_delay: 2d" in suggest_features(project, label_delay="2d").text
    undelayed = suggest_features(project, label_delay="0d")
    assert undelayed.label_delay is None
    assert "label_delay" not in undelayed.text
    result = cli("features", "suggest", "--project", project_dir, "--label-delay", "a week")
    assert result.exit_code == 2
    assert "--label-delay" in plain(result.output)
    assert not (project_dir / "features" / "suggested.yaml").exists()
