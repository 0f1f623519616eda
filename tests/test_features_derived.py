"""Derived features: expressions over an event's features, online, in rules, and their errors
(offline equality is in tests/test_features_parity.py)."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from decisionloop.engine.engine import build_engine, compile_project
from decisionloop.errors import DefinitionError, Problem
from decisionloop.features.offline import offline_features
from decisionloop.project.loader import load_project
from decisionloop.project.scaffold import init_project
from decisionloop.storage.duckdb_source import SCHEMA

DERIVED = (Path(__file__).parent / "data" / "features_templates_derived.yaml").read_text()
RULE = """\
name: derived
rules:
  - id: far_above_average
    when: amount_vs_avg_30d > 3 and amount_z > 2
    outcome: review
"""


def write(tmp_path: Path, text: str, rules: bool = False) -> Path:
    root = tmp_path / "bank"
    init_project(root)
    (root / "features" / "derived.yaml").write_text(text)
    if rules:
        (root / "rules" / "derived.yaml").write_text(RULE)
        strategy = root / "strategies" / "transaction.yaml"
        strategy.write_text(
            strategy.read_text().replace("rule_sets: [fraud]", "rule_sets: [fraud, derived]")
        )
    return root


def transaction(i: int, amount: float) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "type": "transaction",
        "occurred_at": (datetime(2026, 6, 1, tzinfo=UTC) + timedelta(hours=i)).isoformat(),
        "customer_id": "C1",
        "account_id": "A1",
        "amount": amount,
        "currency": "EUR",
        "channel": "card_present",
        "direction": "debit",
    }


def test_derived_features_are_computed_after_the_aggregates_and_read_by_rules(
    tmp_path: Path,
) -> None:
    engine = build_engine(load_project(write(tmp_path, DERIVED, rules=True)))
    amounts = [10.0, 12.0, 8.0, 10.0, 11.0, 9.0, 10.0, 100.0]
    decisions = [
        engine.decide(engine.catalog.validate(transaction(i, a))) for i, a in enumerate(amounts)
    ]
    assert [d.outcome for d in decisions] == ["approve"] * 7 + ["review"]
    fired = decisions[-1].reasons[0]
    assert fired.id == "far_above_average"
    mean = statistics.mean(amounts)
    assert fired.values["amount_vs_avg_30d"] == pytest.approx(100.0 / mean, rel=1e-15)
    z = (100.0 - mean) / statistics.stdev(amounts)
    assert fired.values["amount_z"] == pytest.approx(z, rel=1e-12)


def test_a_derived_feature_is_null_where_an_input_is_and_division_by_zero_is_null(
    tmp_path: Path,
) -> None:
    engine = build_engine(load_project(write(tmp_path, DERIVED)))
    first = engine.features.observe(engine.catalog.validate(transaction(0, 0.0)))
    assert first["customer.amount_stddev_30d"] is None
    assert first["amount_z"] is None
    assert first["amount_vs_avg_30d"] is None  # 0 / 0


def test_offline_values_equal_online_ones(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, DERIVED))
    engine = build_engine(project)
    raws = [transaction(i, a) for i, a in enumerate([10.0, 12.5, 8.0, 10.0, 100.0])]
    online = [engine.features.observe(engine.catalog.validate(raw)) for raw in raws]
    connection = duckdb.connect()
    connection.execute(SCHEMA)
    for seq, raw in enumerate(raws):
        connection.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
            [
                seq,
                raw["event_id"],
                raw["type"],
                raw["occurred_at"],
                raw["occurred_at"],
                orjson.dumps(raw).decode(),
            ],
        )
    offline = offline_features(connection, project).to_dicts()
    for name in ("amount_z", "amount_vs_avg_30d"):
        assert [row[name] for row in offline] == [values[name] for values in online]


def problems(root: Path) -> list[Problem]:
    with pytest.raises(DefinitionError) as caught:
        compile_project(root)
    return [p for p in caught.value.problems if p.file == "features/derived.yaml"]


def at(root: Path, needle: str) -> tuple[int, int]:
    text = (root / "features" / "derived.yaml").read_text()
    offset = text.index(needle)
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def test_a_cycle_is_reported_at_the_reference_that_closes_it(tmp_path: Path) -> None:
    cyclic = DERIVED.replace(
        "expression: amount / customer.amount_avg_30d",
        "expression: amount / customer.amount_avg_30d + amount_z",
    ).replace("/ customer.amount_stddev_30d", "/ amount_vs_avg_30d")
    root = write(tmp_path, cyclic)
    found = problems(root)
    line, column = at(root, "+ amount_z")
    column += 2
    assert [(p.line, p.column, p.reason) for p in found] == [
        (
            line,
            column,
            "cycle: amount_vs_avg_30d reads amount_z, which depends on amount_vs_avg_30d",
        )
    ]


def test_unknown_names_and_non_numbers_are_located(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        DERIVED.replace(
            "amount / customer.amount_avg_30d", "amont / customer.amount_avg_30"
        ).replace(
            "(amount - customer.amount_avg_30d) / customer.amount_stddev_30d",
            "customer.amount_avg_30d > 1",
        ),
    )
    found = problems(root)
    reasons = [(p.line, p.column, p.reason.split("; did")[0]) for p in found]
    assert reasons == [
        (
            *at(root, "customer.amount_avg_30d > 1"),
            "a derived feature must be a number; this expression is a boolean",
        ),
        (*at(root, "amont"), "unknown name 'amont'"),
        (*at(root, "customer.amount_avg_30\n"), "unknown name 'customer.amount_avg_30'"),
    ]


def test_a_derived_name_may_not_shadow_a_field(tmp_path: Path) -> None:
    root = write(tmp_path, DERIVED.replace("name: amount_z", "name: currency"))
    found = problems(root)
    assert [(p.line, p.column, p.reason) for p in found] == [
        (*at(root, "currency"), "'currency' is a field of event type 'transaction'")
    ]
