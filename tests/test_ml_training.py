"""Training frames see only what was known at each decision; training splits by time, handles
imbalance, and registers append-only versions with their metadata."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decisionloop.errors import InputError, NotFoundError, StorageError
from decisionloop.features.offline import offline_features
from decisionloop.ml.registry import ModelRegistry
from decisionloop.ml.train import (
    LightGBMEstimator,
    SklearnEstimator,
    fit_and_register,
    split_by_time,
)
from decisionloop.ml.training import model_inputs, training_frame
from decisionloop.project.loader import Project, load_project
from decisionloop.project.scaffold import init_project
from decisionloop.storage.duckdb_source import SCHEMA
from tests.conftest import transaction

T0 = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("ml") / "project"
    init_project(root)
    return load_project(root)


def txn(i: int, at: timedelta, customer: str = "C1", amount: float = 10.0) -> dict[str, Any]:
    return transaction(
        f"t{i}", occurred_at=(T0 + at).isoformat(), customer_id=customer, amount=amount
    )


def label(i: int, about: str, at: timedelta, name: str = "fraud", by_entity: bool = False) -> Any:
    event: dict[str, Any] = {
        "event_id": f"l{i}",
        "type": "label",
        "occurred_at": (T0 + at).isoformat(),
        "label": name,
        "source": "chargeback",
        "entity_type": "event",
        "entity_id": about if by_entity else "x",
    }
    if not by_entity:
        event["refers_to_event_id"] = about
    return event


def store(raws: list[dict[str, Any]], connection: Any = None) -> duckdb.DuckDBPyConnection:
    """Append events in list order (their ingestion order), stamped ingested now."""
    if connection is None:
        connection = duckdb.connect()
        connection.execute(SCHEMA)
    first = connection.execute("SELECT count(*) FROM events").fetchall()[0][0]
    instants = pa.timestamp("us", tz="UTC")
    rows = pa.table(
        {
            "seq": pa.array(range(first, first + len(raws)), pa.int64()),
            "event_id": [raw["event_id"] for raw in raws],
            "event_type": [raw["type"] for raw in raws],
            "occurred_at": pa.array(
                [datetime.fromisoformat(r["occurred_at"]) for r in raws], instants
            ),
            "ingested_at": pa.array([T0 + timedelta(days=365)] * len(raws), instants),
            "payload": [orjson.dumps(raw).decode() for raw in raws],
        }
    )
    connection.register("new_events", rows)
    connection.execute("INSERT INTO events SELECT * FROM new_events")
    connection.unregister("new_events")
    return connection


def test_inputs_are_the_numeric_fields_and_the_features_of_the_type(project: Project) -> None:
    names = model_inputs(project, "transaction")
    assert names[:2] == ["amount", "balance_before"]
    assert "customer.debit_count_1h" in names
    assert "account.inbound_sum_24h" in names
    assert not any(n.startswith("device.") for n in names)  # no device feature is defined
    with pytest.raises(InputError):
        model_inputs(project, "nope")


def test_targets_count_only_labels_available_by_as_of(project: Project) -> None:
    connection = store(
        [
            txn(0, timedelta(0)),
            txn(1, timedelta(hours=1)),
            txn(2, timedelta(hours=2)),
            txn(3, timedelta(days=3)),  # outside [start, end)
            label(0, "t0", timedelta(days=1)),
            label(1, "t1", timedelta(days=9)),  # learnt after as_of
            label(2, "t2", timedelta(days=1), by_entity=True),
            label(3, "t2", timedelta(hours=30)),  # a later duplicate: the first one counts
            label(4, "t1", timedelta(days=1), name="not_fraud"),
        ]
    )
    frame = training_frame(
        connection,
        project,
        "transaction",
        start=T0,
        end=T0 + timedelta(days=1),
        as_of=T0 + timedelta(days=5),
    ).frame
    assert frame["event_id"].to_list() == ["t0", "t1", "t2"]
    assert frame["target"].to_list() == [1, 0, 1]
    assert frame["label_available_at"].to_list() == [
        T0 + timedelta(days=1),
        None,
        T0 + timedelta(days=1),
    ]
    everything = training_frame(connection, project, "transaction").frame
    assert everything["target"].to_list() == [1, 1, 1, 0]


def test_features_are_the_offline_values_known_before_each_event(project: Project) -> None:
    raws = [txn(i, timedelta(minutes=10 * i), amount=float(i)) for i in range(8)]
    connection = store(raws)
    before = training_frame(connection, project, "transaction").frame
    # Later events and labels, even stamped early, change no earlier row.
    store([txn(99, timedelta(minutes=5)), label(0, "t1", timedelta(0))], connection)
    after = training_frame(connection, project, "transaction").frame
    columns = [c for c in before.columns if c not in ("target", "label_available_at")]
    kept = after.filter(after["event_id"] != "t99").select(columns)
    assert kept.equals(before.select(columns))
    assert before["customer.debit_count_1h"].to_list() == [1, 2, 3, 4, 5, 6, 6, 6]
    assert before["amount"].to_list() == [float(i) for i in range(8)]
    offline = offline_features(connection, project, types=["transaction"])
    assert set(before.columns) >= {"event_id", "occurred_at", "target", "label_available_at"}
    for name in model_inputs(project, "transaction")[2:]:
        assert name in offline.columns


@settings(max_examples=25, deadline=None)
@given(
    share=st.floats(0.05, 0.95),
    minutes=st.lists(st.integers(0, 10_000), min_size=2, max_size=40, unique=True),
)
def test_validation_is_the_last_part_of_the_time_span(share: float, minutes: list[int]) -> None:
    import polars as pl

    frame = pl.DataFrame(
        {"occurred_at": [T0 + timedelta(minutes=m) for m in minutes]},
        schema={"occurred_at": pl.Datetime("us", "UTC")},
    )
    split, cut = split_by_time(frame, share)
    fit_part = split.filter(~pl.col("_validation"))["occurred_at"]
    held = split.filter(pl.col("_validation"))["occurred_at"]
    assert held.len() >= 1  # the last event is always held out
    if fit_part.len():
        assert fit_part.max() < held.min()  # type: ignore[operator]
    first, last = min(minutes), max(minutes)
    assert cut == T0 + timedelta(minutes=first) + (timedelta(minutes=last - first) * (1 - share))


def history(project: Project, days: int = 6, seed: int = 3) -> duckdb.DuckDBPyConnection:
    """Transactions over some days where large amounts are often fraud, labelled a day later."""
    rng = np.random.default_rng(seed)
    raws: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for i in range(days * 80):
        at = timedelta(minutes=18 * i)
        amount = float(rng.choice([12.0, 40.0, 900.0, 2500.0]))
        raws.append(txn(i, at, customer=f"C{i % 25}", amount=amount))
        if amount > 500 and rng.random() < 0.6:
            labels.append(label(i, f"t{i}", at + timedelta(days=1)))
    return store(raws + labels)


def test_training_registers_append_only_versions_with_metadata(project: Project) -> None:
    connection = history(project)
    frame = training_frame(connection, project, "transaction")
    estimator = LightGBMEstimator(trees=30, min_child_samples=5)
    first = fit_and_register(frame, project, "fraud_gbm", estimator)
    second = fit_and_register(frame, project, "fraud_gbm", estimator)
    assert (first.model.version, second.model.version) == (1, 2)
    registry = ModelRegistry(project.root)
    assert registry.versions("fraud_gbm") == [1, 2]
    meta = registry.get("fraud_gbm", 1).metadata
    assert meta["feature_names"] == frame.feature_names
    assert meta["project"]["fingerprint"] == project.fingerprint
    assert "debit_count" in meta["project"]["features"]
    assert meta["libraries"]["lightgbm"] == "4.7.0"
    validation = meta["metrics"]["validation"]
    assert validation["rows"] + meta["metrics"]["training"]["rows"] == frame.frame.height
    assert validation["roc_auc"] > 0.7  # amount separates the classes
    assert 0.0 < validation["average_precision"] <= 1.0
    assert meta["params"]["objective"] == "binary"
    booster = registry.get("fraud_gbm", 1).load()
    assert booster.num_trees() == 30
    with pytest.raises(NotFoundError):
        registry.get("fraud_gbm", 3)


def test_a_changed_artifact_is_refused(project: Project, tmp_path: Path) -> None:
    connection = history(project, seed=4)
    frame = training_frame(connection, project, "transaction")
    registry_project = load_project(project.root)
    result = fit_and_register(frame, registry_project, "tampered", LightGBMEstimator(trees=5))
    artifact = result.model.artifact
    artifact.write_text(artifact.read_text() + "\n")
    with pytest.raises(StorageError):
        result.model.load()


def test_scikit_learn_estimators_plug_in(project: Project) -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    connection = history(project, seed=5)
    frame = training_frame(connection, project, "transaction")
    estimator = SklearnEstimator(
        "logistic",
        lambda: make_pipeline(
            SimpleImputer(keep_empty_features=True), LogisticRegression(class_weight="balanced")
        ),
    )
    result = fit_and_register(frame, project, "fraud_logistic", estimator)
    assert result.model.kind == "sklearn"
    model = result.model.load()
    x = frame.frame.select(frame.feature_names).to_numpy()
    assert model.predict_proba(x).shape == (frame.frame.height, 2)


def test_one_class_is_a_clear_error(project: Project) -> None:
    connection = store([txn(i, timedelta(hours=i)) for i in range(10)])
    frame = training_frame(connection, project, "transaction")
    with pytest.raises(InputError, match="both classes"):
        fit_and_register(frame, project, "nothing", LightGBMEstimator(trees=3))
