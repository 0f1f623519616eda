"""The models of the loop report: what each attached model flagged over the period, how right it
was, the cases its alerts led to, and how far its inputs and score drifted from its training data.

**Scores.** Each event of the period gets the model's probability from its stored decision (the
``model`` reason with id ``<name>@v<version>``, when the model scored it: active or shadow, not
degraded); an event whose decision does not carry it (imported without a decision, decided before
the model was attached, degraded) is scored offline: its point-in-time row
(:func:`decisionloop.ml.training.training_frame`, the values the engine would have read) through
the model's own ``predict`` — the serving walker is checked at load to equal it exactly.

**Flags.** A model flags an event when its score reaches its lowest threshold asking for an outcome
more severe than the strategy's default (e.g. ``{score: 0.6, outcome: review}``); a model without
such a threshold flags nothing. Precision, recall and false positives per true positive count
flags against the events known to be fraud by the period's end, as the backtest counts hits.

**Drift.** The reference is the model's training data window from its registry metadata
(``window.start``/``end``, else its first and last event), recomputed with the same
point-in-time frame and scored the same way: PSI (:mod:`decisionloop.ml.drift`) of every model
input and of the score, per week of the period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import polars as pl

from decisionloop.errors import DecisionLoopError, StorageError
from decisionloop.ml.drift import DRIFT_SCHEMA, DriftThresholds, weekly_psi
from decisionloop.ml.registry import ModelRegistry, ModelVersion
from decisionloop.ml.training import TrainingFrame, training_frame
from decisionloop.project.definitions import ModelRefSpec, StrategySpec
from decisionloop.project.loader import Project
from decisionloop.reports.casework import CASE_FIGURES, case_figures

__all__ = ["MODEL_DRIFT_SCHEMA", "MODEL_SCHEMA", "DriftOptions", "ModelReport", "model_report"]

SCORE = "score"  # the variable name of the score in the drift rows
_SCORE_COLUMN = "_model_score"  # no input can be named so: names start with a letter
MODEL_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "event_type": pl.String,
    "model": pl.String,
    "version": pl.Int64,
    "status": pl.String,
    "threshold": pl.Float64,
    "events": pl.Int64,
    "scored_from_decisions": pl.Int64,
    "scored_offline": pl.Int64,
    "flagged": pl.Int64,
    "labelled_events": pl.Int64,
    "true_positives": pl.Int64,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "false_positives_per_true_positive": pl.Float64,
    **CASE_FIGURES,
    "reference_start": pl.Datetime("us", "UTC"),
    "reference_end": pl.Datetime("us", "UTC"),
    "reference_events": pl.Int64,
    "worst_psi": pl.Float64,
    "drift_level": pl.String,
    "problem": pl.String,
}
MODEL_DRIFT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "event_type": pl.String,
    "model": pl.String,
    "version": pl.Int64,
    "kind": pl.String,  # "score" | "feature"
    **DRIFT_SCHEMA,
}
_STORED_SCORES = """
    SELECT d.event_id, any_value(CAST(r->>'$.values.score' AS DOUBLE)) AS stored_score
    FROM decisions d, unnest(CAST(d.body->'$.reasons' AS JSON[])) AS t(r)
    WHERE d.event_type = $type AND d.occurred_at >= $start AND d.occurred_at < $end
      AND r->>'$.kind' = 'model' AND r->>'$.id' = $label
      AND r->>'$.values.score' IS NOT NULL
    GROUP BY d.event_id
"""


@dataclass(frozen=True)
class DriftOptions:
    thresholds: DriftThresholds
    bins: int
    epsilon: float


@dataclass(frozen=True)
class ModelReport:
    row: dict[str, Any]  # keys of MODEL_SCHEMA
    drift: pl.DataFrame  # MODEL_DRIFT_SCHEMA


def ratios(flagged: int, true_positives: int, labelled: int) -> dict[str, float | None]:
    """Precision, recall and false positives per true positive (None when undefined)."""
    return {
        "precision": true_positives / flagged if flagged else None,
        "recall": true_positives / labelled if labelled else None,
        "false_positives_per_true_positive": (
            (flagged - true_positives) / true_positives if true_positives else None
        ),
    }


def flag_threshold(strategy: StrategySpec, spec: ModelRefSpec) -> float | None:
    """The lowest score at which the model asks for more than the default outcome."""
    asking = [t.score for t in spec.thresholds if t.outcome in strategy.outcomes[1:]]
    return min(asking, default=None)


class _OfflineScores:
    """The model's scores for the rows of a frame, from stored decisions where they carry them."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, version: ModelVersion) -> None:
        self.conn = conn
        self.version = version
        self.label = f"{version.name}@v{version.version}"
        self._fitted: Any = None

    def scores(self, frame: TrainingFrame) -> tuple[np.ndarray, int]:
        """One score per row of ``frame``, and how many came from stored decisions."""
        stored = self._stored(frame)
        joined = frame.frame.join(stored, on="event_id", how="left", maintain_order="left")
        scores = joined["stored_score"].cast(pl.Float64).fill_null(np.nan).to_numpy().copy()
        missing = np.flatnonzero(np.isnan(scores))
        if len(missing):
            names = self.version.feature_names
            rows = joined[missing.tolist()].select(names).to_numpy().astype(np.float64)
            scores[missing] = self._predict(rows)
        return scores, len(scores) - len(missing)

    def _stored(self, frame: TrainingFrame) -> pl.DataFrame:
        empty = pl.DataFrame(schema={"event_id": pl.String, "stored_score": pl.Float64})
        if frame.frame.height == 0:
            return empty
        times = frame.frame["occurred_at"]
        first, last = times.min(), times.max()
        assert isinstance(first, datetime)
        assert isinstance(last, datetime)
        parameters = {
            "type": frame.event_type,
            "start": first,
            "end": last + timedelta(microseconds=1),
            "label": self.label,
        }
        try:
            found: pl.DataFrame = self.conn.sql(_STORED_SCORES, params=parameters).pl()
        except duckdb.CatalogException:  # a source without stored decisions
            return empty
        except duckdb.Error as exc:
            raise StorageError(f"cannot read stored decisions: {exc}") from exc
        return found

    def _predict(self, rows: np.ndarray) -> np.ndarray:
        if self._fitted is None:
            self._fitted = self.version.load()
        if self.version.kind == "sklearn":
            return np.asarray(self._fitted.predict_proba(rows)[:, 1], dtype=np.float64)
        return np.asarray(self._fitted.predict(rows), dtype=np.float64)


def reference_window(version: ModelVersion) -> tuple[datetime, datetime]:
    """The training data window of a registered version: ``[start, end)`` as trained, else from
    its first to its last event (included)."""
    window = version.metadata.get("window")
    if not isinstance(window, dict):
        raise ValueError("its model.json records no data window")
    start = window.get("start") or window.get("first_event")
    end = window.get("end")
    if end is None and window.get("last_event"):
        end = (datetime.fromisoformat(window["last_event"]) + timedelta(microseconds=1)).isoformat()
    if not start or not end:
        raise ValueError("its model.json data window has neither bounds nor events")
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


def model_report(
    conn: duckdb.DuckDBPyConnection,
    project: Project,
    strategy: StrategySpec,
    spec: ModelRefSpec,
    period: TrainingFrame,
    alerts: pl.DataFrame,
    options: DriftOptions,
) -> ModelReport:
    """One model's row and drift rows over ``period`` (the period's frame of its event type,
    targets as known at its end); ``alerts``: the period's alerts (any type)."""
    assert period.start is not None
    assert period.end is not None
    row: dict[str, Any] = dict.fromkeys(MODEL_SCHEMA)
    row.update(
        event_type=strategy.event_type,
        model=spec.name,
        version=spec.version,
        status=spec.status,
        threshold=flag_threshold(strategy, spec),
        events=period.frame.height,
        labelled_events=period.positives,
    )
    no_drift = pl.DataFrame(schema=MODEL_DRIFT_SCHEMA)
    try:
        version = ModelRegistry(project.root).get(spec.name, spec.version)
    except DecisionLoopError as exc:
        return ModelReport({**row, "problem": exc.message}, no_drift)
    problem = _unfit(version, period)
    if problem is not None:
        return ModelReport({**row, "problem": problem}, no_drift)
    offline = _OfflineScores(conn, version)
    scores, from_decisions = offline.scores(period)
    row.update(scored_from_decisions=from_decisions, scored_offline=len(scores) - from_decisions)
    target = period.frame["target"].to_numpy().astype(bool)
    flags = np.zeros(len(scores), dtype=bool)
    if row["threshold"] is not None:
        flags = scores >= row["threshold"]
        true_positives = int((flags & target).sum())
        row.update(flagged=int(flags.sum()), true_positives=true_positives)
        row.update(ratios(int(flags.sum()), true_positives, period.positives))
    flagged_ids = period.frame["event_id"].filter(pl.Series(flags))
    mine = alerts.filter(
        (pl.col("source") == "decision")  # a monitoring hit on the same event is not the model's
        & (pl.col("event_type") == strategy.event_type)
        & pl.col("event_id").is_in(flagged_ids.to_list())
    )
    row.update(case_figures(mine))
    try:
        reference_start, reference_end = reference_window(version)
    except ValueError as exc:
        return ModelReport({**row, "problem": f"no drift reference: {exc}"}, no_drift)
    reference = training_frame(
        conn, project, strategy.event_type, start=reference_start, end=reference_end
    )
    reference_scores, _ = offline.scores(reference)
    row.update(
        reference_start=reference_start,
        reference_end=reference_end,
        reference_events=reference.frame.height,
    )
    if reference.frame.height == 0:
        row["problem"] = "no stored events in the training window: drift has no reference"
    drift = _drift(version, reference, reference_scores, period, scores, options)
    worst = drift["psi"].max()
    if isinstance(worst, float):
        row.update(worst_psi=worst, drift_level=options.thresholds.level(worst))
    return ModelReport(row, drift)


def _unfit(version: ModelVersion, period: TrainingFrame) -> str | None:
    """Why the model cannot be scored on the period's rows, if it cannot."""
    trained_for = version.metadata.get("event_type")
    if trained_for is not None and trained_for != period.event_type:
        return f"trained on {trained_for} events, attached to the {period.event_type} strategy"
    missing = [n for n in version.feature_names if n not in period.feature_names]
    if missing:
        return f"reads names the project no longer defines: {', '.join(missing)}"
    return None


def _drift(
    version: ModelVersion,
    reference: TrainingFrame,
    reference_scores: np.ndarray,
    period: TrainingFrame,
    scores: np.ndarray,
    options: DriftOptions,
) -> pl.DataFrame:
    names = version.feature_names
    assert period.start is not None
    assert period.end is not None
    weekly = weekly_psi(
        reference.frame.select(names).with_columns(pl.Series(_SCORE_COLUMN, reference_scores)),
        period.frame.select("occurred_at", *names).with_columns(pl.Series(_SCORE_COLUMN, scores)),
        [_SCORE_COLUMN, *names],
        period.start,
        period.end,
        bins=options.bins,
        epsilon=options.epsilon,
        thresholds=options.thresholds,
    )
    is_score = pl.col("variable") == _SCORE_COLUMN
    return weekly.select(
        pl.lit(period.event_type).alias("event_type"),
        pl.lit(version.name).alias("model"),
        pl.lit(version.version, dtype=pl.Int64).alias("version"),
        pl.when(is_score).then(pl.lit("score")).otherwise(pl.lit("feature")).alias("kind"),
        pl.all().exclude("variable"),
        pl.when(is_score).then(pl.lit(SCORE)).otherwise(pl.col("variable")).alias("variable"),
    ).select(list(MODEL_DRIFT_SCHEMA))
