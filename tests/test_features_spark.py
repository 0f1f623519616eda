"""Spark gives the DuckDB offline values: same definitions, same compiler, another dialect.

DuckDB's offline values are proven identical to the online engine's (``test_features_parity``,
``test_features_links``); here the very same query printed for Spark must give them again, to the
bit (``identical``: same type, floats by ``repr``), for every aggregation, window, filter,
``include_current``, derived feature, tie, late arrival and label.

A Spark query costs seconds, not DuckDB's 0.1 s, so each hypothesis example *batches* many random
streams into one source layer: each stream's ids (events, entities) get their own prefix, so no
window, label or neighbour of one stream can reach another, and every stream keeps its ingestion
order. Skipped without pyspark (the ``spark`` extra) and Java.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from decisionloop.errors import ConfigError, InputError
from decisionloop.features.offline import compile_offline, offline_features
from decisionloop.features.spark import load_source, local_session, spark_features
from decisionloop.project.loader import load_project
from tests import test_features_links as links
from tests.test_features_parity import (
    T0,
    WITH_LATE,
    Setup,
    _fixed_stream,
    append,
    definitions,
    examples,
    identical,
    streams,
)
from tests.test_features_parity import setup as setup  # the module fixture

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs a Java runtime (java on PATH)")
    session = local_session(cores=2, shuffle_partitions=2, memory="1g", interpreted=True)
    yield session
    session.stop()


# -- batching random streams -----------------------------------------------------------------------
_ID = re.compile(r"^[A-Za-z]\d+$")  # e12, C1, D2, M1, A3, I1: the generators' ids


def prefixed(batch: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The streams one after the other, every id of stream ``i`` prefixed ``s<i>``."""
    merged = []
    for i, raws in enumerate(batch):
        for raw in raws:
            merged.append(
                {
                    k: f"s{i}{v}" if k != "type" and isinstance(v, str) and _ID.match(v) else v
                    for k, v in raw.items()
                }
            )
    return merged


def compare(names: list[str], duck: pl.DataFrame, spark_frame: DataFrame) -> list[str]:
    """Every value of every row: ``[]`` when Spark gives exactly the DuckDB values."""
    spark_rows = pl.from_arrow(spark_frame.toArrow())
    assert isinstance(spark_rows, pl.DataFrame)
    assert spark_rows.columns == duck.columns == ["event_id", *names]
    assert spark_rows["event_id"].to_list() == duck["event_id"].to_list()  # ingestion order
    found = []
    for ours, theirs in zip(duck.to_dicts(), spark_rows.to_dicts(), strict=True):
        for name in names:
            if not identical(ours[name], theirs[name]):
                found.append(
                    f"{ours['event_id']} {name}: duckdb {ours[name]!r} spark {theirs[name]!r}"
                )
    return found


def source(setup: Setup, raws: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    from decisionloop.storage.duckdb_source import SCHEMA

    connection.execute(SCHEMA)
    append(connection, raws, setup, first_seq=0)
    return connection


def big_sums() -> list[dict[str, Any]]:
    """Running totals past 2^53 and squares near 1e30 (as in test_features_parity)."""
    return [
        {
            "event_id": f"e{i}",
            "type": "txn",
            "occurred_at": (T0 + timedelta(seconds=i)).isoformat(),
            "customer_id": "C1",
            "merchant_id": "M1",
            "amount": 999999999.999999 if i % 5 else -0.000001,
            "qty": 1,
        }
        for i in range(30)
    ]


# -- the properties ---------------------------------------------------------------------------
def drawn(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` deterministic hypothesis examples (derandomized), drawn without Spark: one
    Spark query then checks them all (no shrinking: a failure names its events and features)."""
    found: list[Any] = []

    @examples(count)
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


def test_every_aggregation_equals_duckdb(spark: SparkSession, setup: Setup, tmp_path: Path) -> None:
    """The parity project: every aggregation, filters, include_current, labels, derived."""
    raws = prefixed([*drawn(streams(behind=WITH_LATE), 50), big_sums()])
    connection = source(setup, raws)
    duck = connection.sql(setup.sql).pl()
    frame = spark_features(spark, load_source(spark, connection, tmp_path), setup.project)
    assert compare(setup.names, duck, frame) == []
    assert duck.height == len(raws) > 500


def test_random_definitions_equal_duckdb(spark: SparkSession, setup: Setup, tmp_path: Path) -> None:
    """Random definitions (any aggregation, entity, windows, filter, include_current) together
    in one query over random streams."""
    specs = [
        spec.model_copy(update={"name": f"drawn{n}"})
        for n, spec in enumerate(drawn(definitions(), 24))
    ]
    keys = {name: e.key for name, e in setup.project.entities.items()}
    connection = source(setup, prefixed(drawn(streams(behind=WITH_LATE, max_size=30), 30)))
    query = compile_offline(specs, entity_keys=keys, event_types=setup.types)
    events = load_source(spark, connection, tmp_path)
    frame = spark_features(spark, events, specs, entity_keys=keys, event_types=setup.types)
    assert compare(query.names, connection.sql(query.sql).pl(), frame) == []


def test_selection_by_type_and_time_equals_duckdb(
    spark: SparkSession, setup: Setup, tmp_path: Path
) -> None:
    """``types``/``start``/``end`` (a few definitions: the selection is the same for all)."""
    specs = [s for s in setup.project.features if s.name in ("txns_before", "seen", "amounts")]
    keys = {name: e.key for name, e in setup.project.entities.items()}
    selection: dict[str, Any] = {
        "types": ["txn"],
        "start": T0 + timedelta(minutes=3),
        "end": T0 + timedelta(minutes=9),
    }
    connection = source(setup, _fixed_stream())
    duck = offline_features(
        connection, specs, entity_keys=keys, event_types=setup.types, **selection
    )
    assert 0 < duck.height < len(_fixed_stream())
    load_source(spark, connection, tmp_path).createOrReplaceTempView("stored_events")
    frame = spark_features(  # a table name works as well as a DataFrame
        spark, "stored_events", specs, entity_keys=keys, event_types=setup.types, **selection
    )
    names = compile_offline(specs, entity_keys=keys, event_types=setup.types).names
    assert compare(names, duck, frame) == []


# -- labelled neighbours (the ops store's label history) -------------------------------------
def test_labelled_neighbours_equal_duckdb(spark: SparkSession, tmp_path: Path) -> None:
    batch = drawn(links.streams_and_histories(), 30)
    project = load_project(links.write(tmp_path / "links", links.FILES))
    raws = prefixed([raws for raws, _ in batch])
    history = [
        dataclasses.replace(label, id=len(batch) * label.id + i, entity_id=f"s{i}{label.entity_id}")
        for i, (_, labels) in enumerate(batch)
        for label in labels
    ]
    assert history  # the history join runs
    connection = links.store(raws, history)
    query = compile_offline(project)
    assert query.label_history
    duck = connection.sql(query.sql).pl()
    events = load_source(spark, connection, tmp_path)
    frame = spark_features(spark, events, project, labels=history)
    assert compare(query.names, duck, frame) == []
    assert duck.select(pl.col("device.mule_accounts_1h").sum()).item() > 0  # labels were seen


def test_neighbours_need_the_label_history(spark: SparkSession, tmp_path: Path) -> None:
    project = load_project(links.write(tmp_path / "links", links.FILES))
    connection = links.store(
        [{"event_id": "e0", "type": "login", "occurred_at": T0.isoformat()}], []
    )
    events = load_source(spark, connection, tmp_path)
    spark.catalog.dropTempView("dl_label_history")
    with pytest.raises(InputError, match="no label history"):
        spark_features(spark, events, project)


# -- setup errors ---------------------------------------------------------------------------------
def test_the_session_time_zone_must_be_utc(spark: SparkSession, setup: Setup) -> None:
    spark.conf.set("spark.sql.session.timeZone", "Europe/Paris")
    try:
        with pytest.raises(ConfigError, match="time zone must be UTC"):
            spark_features(spark, "events", setup.project)
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")


def test_without_pyspark_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs without pyspark too: the import is lazy and its failure is a ConfigError."""
    monkeypatch.setitem(__import__("sys").modules, "pyspark.sql", None)
    with pytest.raises(ConfigError, match=r"decisionloop\[spark\]") as caught:
        local_session()
    assert caught.value.code == "DL100"
