"""``decisionloop evaluate``: the prequential protocol over the source layer, for the rules alone,
a model alone and the two together.

One point-in-time frame covers the training, delay and test windows (:func:`training_frame`:
features as known just before each event). The ground truth is every positive label stored when
the evaluation runs (the protocol itself decides what was *known* when: see
:mod:`decisionloop.ml.prequential`). Three rankings are scored on the same test events:

* **rules**: what the project's strategy decides today, offline (:func:`strategy_scores`): the
  outcome's severity first, then the fired rules' added scores;
* **model**: a model (LightGBM by default) trained on the training window's rows with the model
  inputs the project gives the event type (its numeric fields and features);
* **rules + model**: the same learner trained with the rules' severity and score as two more
  inputs, so that it learns how far to trust each (stacking) rather than a hand-set blend.

Works on whatever the source layer holds — the demo bank or a file imported with ``ingest`` and a
mapping — as long as it stores labels (events of type ``label``) naming the events.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from decisionloop.errors import InputError, NotFoundError, Problem, StorageError
from decisionloop.features.offline import offline_features
from decisionloop.ml.prequential import Metrics, Protocol, score, split
from decisionloop.ml.train import Estimator, LightGBMEstimator, feature_matrix
from decisionloop.ml.training import training_frame
from decisionloop.ops.store import OpsStore
from decisionloop.project.loader import Project
from decisionloop.rules.report import strategy_scores

__all__ = ["Evaluation", "evaluate"]

RULE_INPUTS = ["rules_severity", "rules_score"]
ENTITY = "_entity"  # the entity column, named apart from any model input


@dataclass(frozen=True)
class Evaluation:
    protocol: Protocol
    event_type: str
    entity: str
    train_events: int
    train_frauds: int
    known_before: list[int]  # per test day: entities removed as already known
    results: dict[str, Metrics]  # "rules", "model", "rules+model"
    predictions: pl.DataFrame  # every test-window event: event_id, score (the model's)

    def as_dict(self) -> dict[str, Any]:
        p = self.protocol
        return {
            "event_type": self.event_type,
            "entity": self.entity,
            "train_start": p.train_start.isoformat(),
            "train_days": p.train_days,
            "delay_days": p.delay_days,
            "test_days": p.test_days,
            "top_k": p.top_k,
            "train_events": self.train_events,
            "train_frauds": self.train_frauds,
            "known_entities_removed_per_test_day": self.known_before,
            "results": {name: m.as_dict() for name, m in self.results.items()},
        }

    def write_predictions(self, path: Path) -> None:
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["event_id", "score"])
            writer.writerows(self.predictions.select("event_id", "score").iter_rows())


def evaluate(
    conn: duckdb.DuckDBPyConnection,
    project: Project,
    protocol: Protocol,
    *,
    entity: str,
    event_type: str | None = None,
    positive_labels: tuple[str, ...] = ("fraud",),
    estimator: Estimator | None = None,
    store: OpsStore | None = None,
) -> Evaluation:
    """Run the protocol (see the module doc). ``event_type``: the decided type to evaluate;
    by default the only one the project's strategies decide."""
    learner = estimator if estimator is not None else LightGBMEstimator()
    event_type = project.event_type_named(event_type)
    _check_entity(project, event_type, entity)
    start, end = protocol.start, protocol.end
    risk_labels = store.labels() if store is not None else []
    # One point-in-time computation serves the model's inputs and the rules' evaluation.
    try:
        features = offline_features(
            conn, project, types=[event_type], start=start, end=end, labels=risk_labels
        )
    except duckdb.Error as exc:
        raise StorageError(f"cannot read the source layer: {exc}") from exc
    training = training_frame(
        conn,
        project,
        event_type,
        start=start,
        end=end,
        positive_labels=positive_labels,
        risk_labels=risk_labels,
        features=features,
    )
    names = training.feature_names
    frame = (
        training.frame.rename({"target": "label"})
        .join(_entity_values(conn, event_type, entity, start, end), on="event_id", how="left")
        .join(
            strategy_scores(conn, project, event_type, start, end, store, features),
            on="event_id",
            how="left",
        )
        .with_columns(pl.col(RULE_INPUTS).fill_null(0))
    )
    parts = split(frame, protocol, ENTITY)
    train = parts.train
    frauds = int(train["label"].sum())
    if train.height == 0 or frauds == 0:
        raise NotFoundError(
            "nothing to learn from",
            [
                Problem(
                    "--train-start",
                    f"the training window from {start:%Y-%m-%d} ({protocol.train_days} days) holds "
                    f"{train.height} {event_type} events and {frauds} labelled "
                    f"{'/'.join(positive_labels)}",
                )
            ],
        )
    y = train["label"].to_numpy().astype(np.float64)
    alone = learner.fit(feature_matrix(train, names), y, names)
    stacked = learner.fit(feature_matrix(train, [*names, *RULE_INPUTS]), y, [*names, *RULE_INPUTS])
    window = frame.filter(pl.col("occurred_at") >= protocol.at_day(protocol.test_first_day))
    predictions = window.select("event_id").with_columns(
        pl.Series("score", learner.predict(alone, feature_matrix(window, names)))
    )
    test = parts.test.join(predictions, on="event_id", how="left").with_columns(
        pl.Series(
            "rules+model",
            learner.predict(stacked, feature_matrix(parts.test, [*names, *RULE_INPUTS])),
        ),
        # Severity first, then the added score (squashed below one severity step).
        (
            pl.col("rules_severity").cast(pl.Float64) + pl.col("rules_score").arctan() / np.pi + 0.5
        ).alias("rules"),
    )
    k = protocol.top_k
    results = {
        "rules": score(test, ENTITY, "rules", k),
        "model": score(test, ENTITY, "score", k),
        "rules+model": score(test, ENTITY, "rules+model", k),
    }
    return Evaluation(
        protocol, event_type, entity, train.height, frauds, parts.known_before, results, predictions
    )


def _check_entity(project: Project, event_type: str, entity: str) -> None:
    spec = project.event_types[event_type]
    keys = {project.entities[e].key for e in spec.entities if e in project.entities}
    if entity not in keys and entity not in spec.fields:
        choices = ", ".join(sorted(keys)) or "none"
        raise InputError(
            "unknown entity field",
            [Problem("--entity", f"{event_type} events carry no {entity!r}; keys: {choices}")],
        )


def _entity_values(
    conn: duckdb.DuckDBPyConnection, event_type: str, entity: str, start: Any, end: Any
) -> pl.DataFrame:
    sql = (
        "SELECT event_id, payload->>$path AS value FROM events WHERE event_type = $type "
        "AND occurred_at >= $start AND occurred_at < $end"
    )
    parameters = {"path": f"$.{entity}", "type": event_type, "start": start, "end": end}
    frame: pl.DataFrame = conn.sql(sql, params=parameters).pl()
    return frame.rename({"value": ENTITY})
