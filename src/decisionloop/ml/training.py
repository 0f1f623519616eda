"""Training sets: one row per event of a decided type, with only what was known at its decision.

:func:`training_frame` returns, for the events of one type that occurred in ``[start, end)``:

* ``event_id``, ``occurred_at`` (the event time: the decision time of the row);
* the model inputs, in :func:`model_inputs` order: the event's own numeric fields (``number``,
  ``integer``, ``boolean`` as 0/1; NULL when absent) and every feature the strategy's rules can
  read for that type (windowed features of the entities it carries, derived features). Feature
  values come from :func:`decisionloop.features.offline.offline_features`, which computes each
  value as known just before the event (only events ingested before it, labels included; see
  :mod:`decisionloop.features.semantics`): no row sees a later value;
* ``target``: 1 when a ``label`` event whose ``label`` is one of ``positive_labels`` names the
  event (``refers_to_event_id``, or ``entity_type = 'event'`` + ``entity_id``) and was available
  at ``as_of``, else 0; ``label_available_at``: when the earliest such label became available
  (NULL for negatives), so that an evaluation can cut again later without leaking.

A label's availability time is its ``occurred_at`` by default: in this project a label event is
stamped with the time the bank learnt the fact (a chargeback's date), and every import stamps its
whole history with the import time as ``ingested_at``, which would make every imported label look
learnt today. A service that receives labels live can choose ``label_time="ingested_at"``: the
time the source layer stored it, which no client can backdate.

``as_of`` defaults to ``None``: every label stored. A training run that must not see the future
passes the end of its label window (``decisionloop train --as-of``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import duckdb
import polars as pl

from decisionloop.domain.events import EventType
from decisionloop.errors import InputError, Problem, StorageError
from decisionloop.features.derived import names_by_type
from decisionloop.features.dialects import DUCKDB
from decisionloop.features.offline import offline_features
from decisionloop.features.semantics import LABEL_EVENT, resolve
from decisionloop.ops.store import Label
from decisionloop.project.definitions import NAME
from decisionloop.project.loader import Project

__all__ = ["TrainingFrame", "model_inputs", "training_frame"]

LabelTime = Literal["occurred_at", "ingested_at"]
_NAME = re.compile(NAME)
# Declared field types a model reads, as the payload is parsed offline (booleans become 0/1).
NUMERIC_FIELDS = {"number": "DOUBLE", "integer": "DOUBLE", "boolean": "BOOLEAN"}


@dataclass(frozen=True)
class TrainingFrame:
    frame: pl.DataFrame  # event_id, occurred_at, *feature_names, target, label_available_at
    feature_names: list[str]
    event_type: str
    start: datetime | None
    end: datetime | None
    as_of: datetime | None
    positive_labels: tuple[str, ...]

    @property
    def positives(self) -> int:
        return int(self.frame["target"].sum())


def model_inputs(project: Project, event_type: str) -> list[str]:
    """The names a model of ``event_type`` reads, as the decision row holds them online: the
    type's numeric fields, then its features (by definition order), then its derived features."""
    spec = project.event_types.get(event_type)
    if spec is None:
        known = ", ".join(sorted(project.event_types)) or "none"
        raise InputError(
            f"unknown event type {event_type!r}",
            [Problem("event_type", f"the project declares: {known}")],
        )
    types = {
        name: EventType.build(name, one, project.entities)
        for name, one in project.event_types.items()
    }
    entity_keys = {name: entity.key for name, entity in project.entities.items()}
    fields = [name for name, f in spec.fields.items() if f.type in NUMERIC_FIELDS]
    definitions = resolve(project.features, entity_keys, types)
    features = names_by_type(((d.key_field, d.names) for d in definitions), types)[event_type]
    derived = [d.name for d in project.derived if event_type in d.event_types]
    return [*fields, *features, *derived]


def training_frame(
    connection: duckdb.DuckDBPyConnection,
    project: Project,
    event_type: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    as_of: datetime | None = None,
    positive_labels: Sequence[str] = ("fraud",),
    label_time: LabelTime = "occurred_at",
    risk_labels: Sequence[Label] | None = None,
    features: pl.DataFrame | None = None,
) -> TrainingFrame:
    """The training frame of ``event_type`` events in ``[start, end)`` (see the module doc).
    ``risk_labels``: the ops store's label history (``store.labels()``), which
    ``labelled_neighbours`` features read. ``features``: the offline features of the same
    events, when the caller has computed them already (``offline_features`` with the same
    type, period and labels)."""
    names = model_inputs(project, event_type)
    declared = project.event_types[event_type].fields
    fields = {n: NUMERIC_FIELDS[declared[n].type] for n in names if n in declared}
    try:
        if features is None:
            features = offline_features(
                connection, project, types=[event_type], start=start, end=end, labels=risk_labels
            )
        features = features.select(["event_id", *(n for n in names if n not in fields)])
        events = _events(connection, event_type, fields, start, end)
        labels = _labels(connection, tuple(positive_labels), as_of, label_time)
    except duckdb.Error as exc:
        raise StorageError(f"cannot read the source layer: {exc}") from exc
    frame = (
        events.join(features, on="event_id", how="inner")
        .join(labels, on="event_id", how="left")
        .with_columns(
            pl.col("label_available_at").is_not_null().cast(pl.Int8).alias("target"),
            *(pl.col(n).cast(pl.Float64) for n in names),
        )
        .sort("occurred_at", "_seq")
        .select("event_id", "occurred_at", *names, "target", "label_available_at")
    )
    return TrainingFrame(frame, names, event_type, start, end, as_of, tuple(positive_labels))


def _events(
    connection: duckdb.DuckDBPyConnection,
    event_type: str,
    fields: dict[str, str],
    start: datetime | None,
    end: datetime | None,
) -> pl.DataFrame:
    """event_id, ingestion order, event time and the numeric fields of the selected events."""
    columns = ""
    if fields:
        for name in fields:  # declared names only, validated as identifiers: safe in SQL text
            assert _NAME.match(name)
        struct = DUCKDB.payload_struct("payload", fields)
        columns = "".join(f", CAST(_p.{name} AS DOUBLE) AS {name}" for name in fields)
        source = f"(SELECT *, {struct} AS _p FROM events)"
    else:
        source = "events"
    sql = (
        f"SELECT event_id, seq AS _seq, epoch_us(occurred_at) AS _t{columns} FROM {source} "
        "WHERE event_type = $type AND ($start IS NULL OR occurred_at >= $start) "
        "AND ($end IS NULL OR occurred_at < $end)"
    )
    parameters = {"type": event_type, "start": start, "end": end}
    frame: pl.DataFrame = connection.sql(sql, params=parameters).pl()
    return frame.with_columns(
        pl.col("_t").cast(pl.Datetime("us", "UTC")).alias("occurred_at")
    ).drop("_t")


def _labels(
    connection: duckdb.DuckDBPyConnection,
    positive: tuple[str, ...],
    as_of: datetime | None,
    label_time: LabelTime,
) -> pl.DataFrame:
    """Per labelled event id, when its first positive label became available (by ``as_of``)."""
    column = {"occurred_at": "occurred_at", "ingested_at": "ingested_at"}[label_time]
    sql = f"""
        SELECT target AS event_id, min(epoch_us(available)) AS _available FROM (
            SELECT coalesce(
                       payload->>'$.refers_to_event_id',
                       CASE WHEN payload->>'$.entity_type' = 'event'
                            THEN payload->>'$.entity_id' END
                   ) AS target,
                   {column} AS available
            FROM events
            WHERE event_type = $label_type AND list_contains($positive, payload->>'$.label')
        )
        WHERE target IS NOT NULL AND ($as_of IS NULL OR available <= $as_of)
        GROUP BY target
    """
    parameters = {
        "label_type": LABEL_EVENT,
        "positive": list(positive),
        "as_of": as_of,
    }
    frame: pl.DataFrame = connection.sql(sql, params=parameters).pl()
    return frame.with_columns(
        pl.col("_available").cast(pl.Datetime("us", "UTC")).alias("label_available_at")
    ).drop("_available")
