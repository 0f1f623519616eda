"""What investigators made of the alerts of a period: cases, dispositions, time to disposition.

The alerts of a period are the case store's alerts about events that *occurred* in it (event
time, as the backtest counts hits), whichever process stored them. A rule's alerts are those
that list it (a decision's fired, non-shadow rules; a monitoring hit's ``<set>.<rule>``); a
model's are the decision alerts about events it flagged. The figures of a set of alerts:

* ``alerts``: how many; ``cases_opened``: the distinct cases they opened or joined;
* ``cases_closed``: those of them closed by a disposition when the report runs, and how many of
  each disposition (``disposed_fraud``, ``disposed_not_fraud``, ``disposed_inconclusive``);
* ``disposition_median_s``, ``disposition_p90_s``: over the closed cases, the time from the
  case's opening to its disposition, in seconds (the case store's own clock, not event time);
  median and 90th percentile by linear interpolation between order statistics
  (``np.percentile``'s default). None without a closed case.

Case times are those of the case store: a case opened for an imported or replayed event is
opened when it was stored, so its time to disposition is still the investigators' real time.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from decisionloop.cases.config import DISPOSITIONS
from decisionloop.cases.store import CLOSED, SqlCaseStore, alerts_table, cases_table
from decisionloop.errors import Problem, StorageError
from decisionloop.ops.store import to_us

__all__ = ["ALERTS_SCHEMA", "CASE_FIGURES", "case_figures", "period_alerts"]

ALERTS_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "alert_id": pl.Int64,
    "case_id": pl.Int64,
    "source": pl.String,
    "event_id": pl.String,
    "event_type": pl.String,
    "rule_ids": pl.List(pl.String),
    "status": pl.String,
    "opened_us": pl.Int64,
    "closed_us": pl.Int64,
    "disposition": pl.String,
}
CASE_FIGURES: dict[str, pl.DataType | type[pl.DataType]] = {
    "alerts": pl.Int64,
    "cases_opened": pl.Int64,
    "cases_closed": pl.Int64,
    **{f"disposed_{d}": pl.Int64 for d in DISPOSITIONS},
    "disposition_median_s": pl.Float64,
    "disposition_p90_s": pl.Float64,
}


def period_alerts(cases: SqlCaseStore | None, start: datetime, end: datetime) -> pl.DataFrame:
    """The alerts about events of ``[start, end)`` with their case's state (none without a
    store), columns of :data:`ALERTS_SCHEMA`."""
    if cases is None:
        return pl.DataFrame(schema=ALERTS_SCHEMA)
    a, c = alerts_table, cases_table
    query = (
        sa.select(
            a.c.id.label("alert_id"),
            a.c.case_id,
            a.c.source,
            a.c.event_id,
            a.c.event_type,
            a.c.rule_ids,
            c.c.status,
            c.c.opened_us,
            c.c.closed_us,
            c.c.disposition,
        )
        .join_from(a, c, a.c.case_id == c.c.id)
        .where(a.c.occurred_us >= to_us(start), a.c.occurred_us < to_us(end))
        .order_by(a.c.id)
    )
    try:
        with cases.engine.connect() as conn:
            rows = [r._asdict() for r in conn.execute(query)]
    except SQLAlchemyError as exc:
        raise StorageError("cannot read the case store", [Problem("case_store", str(exc))]) from exc
    for row in rows:
        row["rule_ids"] = json.loads(row["rule_ids"])
    return pl.DataFrame(rows, schema=ALERTS_SCHEMA)


def case_figures(alerts: pl.DataFrame) -> dict[str, Any]:
    """The figures of a set of alerts (see the module doc), keys of :data:`CASE_FIGURES`."""
    cases = alerts.unique("case_id", keep="first")
    closed = cases.filter((pl.col("status") == CLOSED) & pl.col("closed_us").is_not_null())
    seconds = ((closed["closed_us"] - closed["opened_us"]) / 1_000_000).to_numpy()
    figures: dict[str, Any] = {
        "alerts": alerts.height,
        "cases_opened": cases.height,
        "cases_closed": closed.height,
    }
    for disposition in DISPOSITIONS:
        figures[f"disposed_{disposition}"] = int((closed["disposition"] == disposition).sum())
    figures["disposition_median_s"] = float(np.percentile(seconds, 50)) if len(seconds) else None
    figures["disposition_p90_s"] = float(np.percentile(seconds, 90)) if len(seconds) else None
    return figures
