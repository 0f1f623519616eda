"""The loop report: per rule and per model over a period, what fired, how right it was, what the
cases made of it, and how far each model's inputs and score drifted from its training data.

* **Rules** (:data:`RULE_SCHEMA`): the backtest's figures (:func:`decisionloop.rules.report.
  backtest`: hits, labelled events, true positives, precision, recall, over the stored events of
  the period with point-in-time features and the labels known by its end), false positives per
  true positive (``(hits - true_positives) / true_positives``), and the case figures of the
  alerts that list the rule (:mod:`decisionloop.reports.casework`). Alerts of rules the project's
  strategies do not list (monitoring rule sets, ``<set>.<rule>``, or rules since removed) get a
  row of their own, with the case figures only.
* **Models** (:data:`decisionloop.reports.models.MODEL_SCHEMA`): the active and shadow models of
  every strategy, with flags in place of hits (:mod:`decisionloop.reports.models`).
* **Drift** (:data:`decisionloop.reports.models.MODEL_DRIFT_SCHEMA`): PSI per week, per model
  input and for the score, against the model's training window, with its level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from decisionloop.cases.store import SqlCaseStore
from decisionloop.errors import InputError, Problem
from decisionloop.ml.drift import DEFAULT_BINS, EPSILON, DriftThresholds, check_binning
from decisionloop.ml.training import training_frame
from decisionloop.ops.store import OpsStore
from decisionloop.project.loader import Project, load_project
from decisionloop.reports.casework import CASE_FIGURES, case_figures, period_alerts
from decisionloop.reports.models import (
    MODEL_DRIFT_SCHEMA,
    MODEL_SCHEMA,
    DriftOptions,
    model_report,
    ratios,
)
from decisionloop.rules.report import POSITIVE_LABELS, backtest, open_source

__all__ = ["RULE_SCHEMA", "LoopReport", "loop_report"]

RULE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "event_type": pl.String,
    "rule_id": pl.String,
    "rule_set": pl.String,
    "status": pl.String,
    "events": pl.Int64,
    "hits": pl.Int64,
    "labelled_events": pl.Int64,
    "true_positives": pl.Int64,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "false_positives_per_true_positive": pl.Float64,
    **CASE_FIGURES,
}
# A label available at this instant is available "by" the end: [start, end) in microseconds.
_JUST_BEFORE = timedelta(microseconds=1)


@dataclass(frozen=True)
class LoopReport:
    start: datetime
    end: datetime  # excluded
    thresholds: DriftThresholds
    bins: int
    epsilon: float
    rules: pl.DataFrame  # RULE_SCHEMA
    models: pl.DataFrame  # MODEL_SCHEMA
    drift: pl.DataFrame  # MODEL_DRIFT_SCHEMA

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "psi": {
                "watch": self.thresholds.watch,
                "alert": self.thresholds.alert,
                "bins": self.bins,
                "epsilon": self.epsilon,
            },
            "rules": self.rules.to_dicts(),
            "models": self.models.to_dicts(),
            "drift": self.drift.to_dicts(),
        }


def loop_report(
    conn_or_path: duckdb.DuckDBPyConnection | Path | str,
    project: Project | Path | str,
    start: datetime | date,
    end: datetime | date,
    *,
    cases: SqlCaseStore | None = None,
    store: OpsStore | None = None,
    thresholds: DriftThresholds | None = None,
    bins: int = DEFAULT_BINS,
    epsilon: float = EPSILON,
    positive_labels: Sequence[str] = POSITIVE_LABELS,
) -> LoopReport:
    """The report over the stored events of ``[start, end)`` (dates are midnight UTC).

    ``conn_or_path``: a DuckDB connection on the source layer, or its file (opened read-only).
    ``cases``: the case store whose alerts and cases are counted (none: no alerts).
    ``store``: the operational store the rules' ``has_label``/``in_list`` read (as the backtest).
    Stores are read, not closed."""
    start, end = _instant(start), _instant(end)
    if start >= end:
        raise InputError(
            "empty period",
            [Problem("period", f"the start {start.isoformat()} is not before the end {end}")],
        )
    check_binning(bins, epsilon)  # before any work
    limits = thresholds or DriftThresholds()
    options = DriftOptions(limits, bins, epsilon)
    loaded = project if isinstance(project, Project) else load_project(Path(project))
    own = not isinstance(conn_or_path, duckdb.DuckDBPyConnection)
    if isinstance(conn_or_path, duckdb.DuckDBPyConnection):
        conn = conn_or_path
    else:
        conn = open_source(Path(conn_or_path))
    try:
        backtested = backtest(
            conn, loaded, start, end, positive_labels=positive_labels, store=store
        )
        alerts = period_alerts(cases, start, end)
        rules = _rule_rows(backtested, alerts)
        model_rows: list[dict[str, Any]] = []
        drift = [pl.DataFrame(schema=MODEL_DRIFT_SCHEMA)]
        for event_type, strategy in loaded.strategies.items():
            attached = [m for m in strategy.models if m.status != "retired"]
            if not attached:
                continue
            period = training_frame(
                conn,
                loaded,
                event_type,
                start=start,
                end=end,
                as_of=end - _JUST_BEFORE,
                positive_labels=positive_labels,
            )
            for spec in attached:
                done = model_report(conn, loaded, strategy, spec, period, alerts, options)
                model_rows.append(done.row)
                drift.append(done.drift)
    finally:
        if own:
            conn.close()
    return LoopReport(
        start,
        end,
        limits,
        bins,
        epsilon,
        rules,
        pl.DataFrame(model_rows, schema=MODEL_SCHEMA),
        pl.concat(drift),
    )


def _instant(moment: datetime | date) -> datetime:
    """Dates are midnight UTC, naive times UTC (as the backtest reads them)."""
    if not isinstance(moment, datetime):
        return datetime.combine(moment, time(), tzinfo=UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _rule_rows(backtested: pl.DataFrame, alerts: pl.DataFrame) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    listed: set[tuple[str, str]] = set()
    for rule in backtested.iter_rows(named=True):
        event_type, rule_id = rule["event_type"], rule["rule_id"]
        listed.add((event_type, rule_id))
        mine = alerts.filter(
            (pl.col("event_type") == event_type) & pl.col("rule_ids").list.contains(rule_id)
        )
        rows.append(
            {
                **{k: rule[k] for k in RULE_SCHEMA if k in backtested.columns},
                **ratios(rule["hits"], rule["true_positives"], rule["labelled_events"]),
                **case_figures(mine),
            }
        )
    # Alerts of rules no strategy lists: monitoring rule sets, or rules removed since.
    exploded = alerts.explode("rule_ids").drop_nulls("rule_ids")
    key = pl.concat_str("event_type", "rule_ids", separator="\x00")
    others = exploded.filter(~key.is_in([f"{t}\x00{r}" for t, r in listed]))
    for (event_type, rule_id), mine in others.group_by(
        "event_type", "rule_ids", maintain_order=True
    ):
        monitoring = bool((mine["source"] == "monitor").all())
        rule_set, _, _ = str(rule_id).rpartition(".") if monitoring else ("", "", "")
        rows.append(
            {
                "event_type": event_type,
                "rule_id": rule_id,
                "rule_set": rule_set or None,
                "status": "monitoring" if monitoring else "not listed",
                **case_figures(mine),
            }
        )
    return pl.DataFrame(rows, schema=RULE_SCHEMA)
