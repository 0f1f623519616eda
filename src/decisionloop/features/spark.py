"""Offline features on Spark: the same compiled query, printed for Spark SQL (``docs/spark.md``).

:func:`spark_features` takes a Spark table or DataFrame of stored events (the source layer's
columns: ``seq``, ``event_id``, ``event_type``, ``occurred_at``, ``ingested_at``, ``payload``) and
returns, as a Spark DataFrame, the values :func:`decisionloop.features.offline.offline_features`
returns on DuckDB — identical ones: the compiler is the same, only the dialect differs
(:class:`~decisionloop.features.dialects.SparkDialect`). :func:`load_source` moves a DuckDB
source layer's events into Spark through Parquet; :func:`local_session` starts a session with the
settings the results depend on.

pyspark is optional (the ``spark`` extra) and imported only here, on first use.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from decisionloop.errors import ConfigError, InputError, Problem
from decisionloop.features.dialects import SPARK
from decisionloop.features.offline import compile_offline
from decisionloop.ops.lookups import LABEL_HISTORY

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from decisionloop.features.semantics import HasFields
    from decisionloop.ops.store import Label
    from decisionloop.project.definitions import FeatureSpec
    from decisionloop.project.loader import Project

__all__ = ["load_source", "local_session", "require_pyspark", "spark_features"]

# hour()/dayofweek() in filters and derived features read the session time zone.
_UTC = {"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Z", "+00:00"}


def require_pyspark() -> Any:
    """The ``pyspark.sql`` module, or a clear error naming the extra to install."""
    try:
        return importlib.import_module("pyspark.sql")
    except ImportError as exc:
        raise ConfigError(
            "Spark support needs pyspark: install the spark extra "
            "(pip install 'decisionloop[spark]'; Java 17 or later on the PATH)"
        ) from exc


def local_session(
    cores: int = 2, shuffle_partitions: int = 4, memory: str = "2g", interpreted: bool = False
) -> SparkSession:
    """A local-mode session with UTC session time, few shuffle partitions (local data: the
    default 200 mostly schedules empty tasks) and no UI or progress bars. ``interpreted``: for
    small inputs (tests): no code generation and no adaptive re-planning, which cost the
    feature query tens of seconds of compiling that a few thousand rows never pay back."""
    sql = require_pyspark()
    builder = (
        sql.SparkSession.builder.master(f"local[{cores}]")
        .appName("decisionloop")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.driver.memory", memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if interpreted:
        builder = (
            builder.config("spark.sql.codegen.wholeStage", "false")
            .config("spark.sql.codegen.factoryMode", "NO_CODEGEN")
            .config("spark.sql.adaptive.enabled", "false")
        )
    session: SparkSession = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_features(
    spark: SparkSession,
    events: DataFrame | str,
    project_or_specs: Project | Sequence[FeatureSpec],
    *,
    entity_keys: Mapping[str, str] | None = None,
    event_types: Mapping[str, HasFields] | None = None,
    types: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    labels: DataFrame | Sequence[Label] | None = None,
) -> DataFrame:
    """Feature values as known at decision time for the stored ``events`` (a DataFrame or the
    name of a table or view): ``event_id`` + one column per feature name, one row per selected
    event in ingestion order — the arguments and values of ``offline_features``.

    ``labels``: the ops store's label history that ``labelled_neighbours`` reads (a DataFrame
    with the columns of ``ops.history.label_table``, or the store's labels); without it, the
    session must already have a view ``dl_label_history``."""
    require_pyspark()
    zone = spark.conf.get("spark.sql.session.timeZone")
    if zone not in _UTC:
        reason = f"is {zone!r}; hour() and dayofweek() in filters would read local time"
        raise ConfigError(
            "the Spark session time zone must be UTC",
            [Problem("spark.sql.session.timeZone", reason)],
        )
    if isinstance(events, str):
        table = events
    else:
        table = f"dl_events_{uuid.uuid4().hex}"
        events.createOrReplaceTempView(table)
    query = compile_offline(
        project_or_specs,
        entity_keys=entity_keys,
        event_types=event_types,
        types=types,
        start=start,
        end=end,
        table=table,
        dialect=SPARK,
    )
    if query.label_history:
        if labels is None:
            if not spark.catalog.tableExists(LABEL_HISTORY):
                reason = (
                    "labelled_neighbours reads the ops store's label history: pass `labels` or "
                    f"register a view {LABEL_HISTORY}"
                )
                raise InputError("no label history", [Problem("labels", reason)])
        else:
            _label_frame(spark, labels).createOrReplaceTempView(LABEL_HISTORY)
    frame: DataFrame = spark.sql(query.sql)
    return frame


def _label_frame(spark: SparkSession, labels: DataFrame | Sequence[Label]) -> DataFrame:
    if not isinstance(labels, Sequence):
        return labels
    from decisionloop.ops.history import label_table  # the store's schema (SQLAlchemy) on demand

    frame: DataFrame = spark.createDataFrame(label_table(labels))
    return frame


def load_source(
    spark: SparkSession,
    source: duckdb.DuckDBPyConnection | str | Path,
    directory: str | Path,
) -> DataFrame:
    """The events of a DuckDB source layer (a connection, or the path of its database file) as
    a Spark DataFrame, through a Parquet file written in ``directory`` (it must outlive the
    DataFrame: Spark reads lazily). Instants stay UTC microseconds."""
    require_pyspark()
    target = Path(directory) / f"events-{uuid.uuid4().hex}.parquet"
    connection = (
        source
        if isinstance(source, duckdb.DuckDBPyConnection)
        else duckdb.connect(str(source), read_only=True)
    )
    try:
        path = str(target).replace("'", "''")
        connection.execute(
            "COPY (SELECT seq, event_id, event_type, occurred_at, ingested_at, payload "
            f"FROM events ORDER BY seq) TO '{path}' (FORMAT parquet)"
        )
    finally:
        if connection is not source:
            connection.close()
    frame: DataFrame = spark.read.parquet(str(target))
    return frame
