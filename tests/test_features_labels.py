"""Label-aware features: labels count from their arrival on, never before, online and offline.

``terminal.fraud_share_7d``: the share of the terminal's transactions in the last seven days that
were labelled ``fraud`` by a ``label`` event ingested before the current one. A chargeback learnt
weeks later must never reach the offline (training) row of an event decided before it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pytest
from pydantic import ValidationError

from decisionloop.engine.engine import build_engine
from decisionloop.errors import DefinitionError
from decisionloop.features.offline import compile_offline
from decisionloop.project.definitions import FeatureSpec
from decisionloop.project.loader import Project, load_project
from decisionloop.storage.duckdb_source import SCHEMA

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
FILES = {
    "project.yaml": "name: labels\n",
    "entities.yaml": "entities:\n  terminal: {key: terminal_id}\n  customer: {key: customer_id}\n",
    "events/types.yaml": """
event_types:
  transaction:
    entities: {terminal: required, customer: optional}
    fields:
      amount: {type: number}
  label:
    fields:
      entity_type: {type: enum, values: [event, customer, terminal]}
      entity_id: {type: string}
      label: {type: string, required: true}
      refers_to_event_id: {type: string}
""",
    "features/labels.yaml": """
features:
  - {name: fraud_share, entity: terminal, aggregation: labelled_share, label: fraud,
     windows: [7d], event_types: [transaction]}
  - {name: fraud_before, entity: terminal, aggregation: labelled_count, label: fraud,
     windows: [1h, 7d], event_types: [transaction], include_current: false}
  - {name: big_fraud, entity: terminal, aggregation: labelled_count, label: fraud,
     windows: [7d], event_types: [transaction], filter: amount >= 100}
  - {name: known_fraud_share, entity: terminal, aggregation: labelled_share, label: fraud,
     windows: [7d], label_delay: 2d, event_types: [transaction]}
""",
}
NAMES = [
    "terminal.fraud_share_7d",
    "terminal.fraud_before_1h",
    "terminal.fraud_before_7d",
    "terminal.big_fraud_7d",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("labels")
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return load_project(root)


def txn(i: int, at: timedelta, amount: float = 10.0, terminal: str = "T1") -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "type": "transaction",
        "occurred_at": (T0 + at).isoformat(),
        "terminal_id": terminal,
        "amount": amount,
    }


def label(name: str, about: str, at: timedelta, by_entity: bool = False) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": name,
        "type": "label",
        "occurred_at": (T0 + at).isoformat(),
        "label": "fraud",
    }
    if by_entity:
        event.update(entity_type="event", entity_id=about)
    else:
        event["refers_to_event_id"] = about
    return event


def online(project: Project, raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    engine = build_engine(project)
    return [engine.features.observe(engine.catalog.validate(raw)) for raw in raws]


def store(raws: list[dict[str, Any]], connection: duckdb.DuckDBPyConnection | None = None) -> Any:
    if connection is None:
        connection = duckdb.connect()
        connection.execute(SCHEMA)
    first = connection.execute("SELECT count(*) FROM events").fetchall()[0]
    instants = pa.timestamp("us", tz="UTC")
    rows = pa.table(
        {
            "seq": pa.array(range(first[0], first[0] + len(raws)), pa.int64()),
            "event_id": [raw["event_id"] for raw in raws],
            "event_type": [raw["type"] for raw in raws],
            "occurred_at": pa.array(
                [datetime.fromisoformat(r["occurred_at"]) for r in raws], instants
            ),
            "ingested_at": pa.array([T0] * len(raws), instants),
            "payload": [orjson.dumps(raw).decode() for raw in raws],
        }
    )
    connection.register("new_events", rows)
    connection.execute("INSERT INTO events SELECT * FROM new_events")
    connection.unregister("new_events")
    return connection


def offline(project: Project, connection: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = connection.sql(compile_offline(project).sql).pl().to_dicts()
    return rows


def test_a_label_arriving_after_an_event_never_changes_its_offline_features(
    project: Project,
) -> None:
    raws = [txn(0, timedelta(0)), txn(1, timedelta(hours=1)), txn(2, timedelta(days=1))]
    connection = store(raws)
    before = offline(project, connection)
    # The chargeback for e0 arrives weeks later — even stamped at (or before) e0's own time,
    # twice, once by entity_type/entity_id: no stored event's row may change.
    store(
        [
            label("l0", "e0", timedelta(days=30)),
            label("l1", "e0", timedelta(0)),
            label("l2", "e1", -timedelta(days=1), by_entity=True),
        ],
        connection,
    )
    after = offline(project, connection)
    assert after[: len(before)] == before
    assert [row["terminal.fraud_share_7d"] for row in before] == [0.0, 0.0, 0.0]


def test_events_after_the_label_see_it_online_and_offline(project: Project) -> None:
    raws = [
        txn(0, timedelta(0), amount=500.0),
        txn(1, timedelta(minutes=10)),
        label("l0", "e0", timedelta(days=2)),  # learnt two days later
        label("l1", "e0", timedelta(days=2)),  # a duplicate counts once
        label("l2", "e9", timedelta(days=2)),  # an event not seen yet: counts from its arrival
        txn(3, timedelta(days=2, minutes=1)),
        label("l3", "e1", timedelta(days=2, minutes=2), by_entity=True),
        txn(5, timedelta(days=2, minutes=3), terminal="T2"),  # another terminal
        txn(6, timedelta(days=7, minutes=15)),  # e0 and e1 have left the 7-day window
        txn(7, timedelta(days=7, minutes=16)),
        txn(8, timedelta(days=7, minutes=17)),
        txn(9, timedelta(days=7, minutes=18)),  # labelled (l2) before it arrived
        txn(10, timedelta(days=7, minutes=19)),
    ]
    seen = online(project, raws)
    rows = offline(project, store(raws))
    for values, row in zip(seen, rows, strict=True):
        for name in NAMES:
            assert values.get(name) == row[name], (row["event_id"], name)
            assert type(values.get(name)) is type(row[name]), (row["event_id"], name)
    by_id = {row["event_id"]: row for row in rows}
    assert by_id["e1"]["terminal.fraud_share_7d"] == 0.0
    assert by_id["e3"]["terminal.fraud_share_7d"] == 1 / 3
    assert by_id["e3"]["terminal.big_fraud_7d"] == 1
    assert by_id["e5"]["terminal.fraud_share_7d"] == 0.0
    assert by_id["e6"]["terminal.fraud_share_7d"] == 0.0
    assert by_id["e6"]["terminal.fraud_before_7d"] == 0
    assert by_id["e9"]["terminal.fraud_before_7d"] == 0  # itself: include_current false
    assert by_id["e9"]["terminal.fraud_share_7d"] == 1 / 5
    assert by_id["e10"]["terminal.fraud_before_1h"] == 1
    assert by_id["l0"]["terminal.fraud_share_7d"] is None  # no terminal: NULL


def test_a_label_delay_counts_only_events_old_enough_for_their_labels(project: Project) -> None:
    """``label_delay: 2d`` over 7 days: the events in (t - 9d, t - 2d], labels as known at t."""
    day = timedelta(days=1)
    raws = [
        txn(0, 0 * day),
        txn(1, 1 * day),
        label("l0", "e0", 1 * day + timedelta(hours=1)),
        txn(2, 3 * day),
        txn(3, 4 * day),  # sees e0 (labelled) and e1: not e2, too recent
        label("l1", "e1", 5 * day),  # learnt after e3: e3 never counts it
        txn(5, 6 * day),  # e0..e3, two labelled
        txn(6, 9 * day + timedelta(hours=12)),  # e1, e2, e3, e5: e0 has left
    ]
    seen = online(project, raws)
    rows = offline(project, store(raws))
    name = "terminal.known_fraud_share_7d"
    for values, row in zip(seen, rows, strict=True):
        assert values.get(name) == row[name], row["event_id"]
    by_id = {row["event_id"]: row for row in rows}
    assert by_id["e0"][name] is None  # nothing is two days old yet
    assert by_id["e1"][name] is None
    assert by_id["e3"][name] == 1 / 2
    assert by_id["e3"]["terminal.fraud_share_7d"] == 1 / 4  # undelayed: diluted by e2, e3
    assert by_id["e5"][name] == 2 / 4
    assert by_id["e6"][name] == 1 / 4


def test_labels_are_forgotten_with_the_events_they_name(project: Project) -> None:
    engine = build_engine(project)
    raws = [txn(i, timedelta(hours=i)) for i in range(0, 24 * 20, 6)]
    raws.append(label("l0", "never-seen", timedelta(hours=1)))
    raws.sort(key=lambda raw: raw["occurred_at"])
    for raw in raws:
        engine.features.observe(engine.catalog.validate(raw))
    groups = [g for g in engine.features.groups if g.labelled]
    assert groups
    for group in groups:  # ids are kept for the longest window (9 days with its delay) only
        assert group.retention == 9 * 86400 * 1_000_000 + 300 * 1_000_000
        assert not group.pending
        # ... plus what arrives between two sweeps (every bucket: a quarter of the retention).
        kept = group.retention + group.bucket_us
        assert len(group.ids) <= kept // (6 * 3600 * 1_000_000) + 1


def test_labelled_definitions_are_checked(tmp_path: Path, project: Project) -> None:
    with pytest.raises(ValidationError, match="needs a `label`"):
        FeatureSpec(
            name="x", entity="terminal", aggregation="labelled_share", windows=["1h"],
            event_types=["transaction"],
        )  # fmt: skip
    with pytest.raises(ValidationError, match="only read by labelled"):
        FeatureSpec(
            name="x", entity="terminal", aggregation="count", label="fraud", windows=["1h"],
            event_types=["transaction"],
        )  # fmt: skip
    with pytest.raises(ValidationError, match="`label_delay` is only read by labelled_count"):
        FeatureSpec(
            name="x", entity="terminal", aggregation="count", label_delay="7d", windows=["1h"],
            event_types=["transaction"],
        )  # fmt: skip
    with pytest.raises(ValidationError, match="must look like"):
        FeatureSpec(
            name="x", entity="terminal", aggregation="labelled_count", label="fraud",
            label_delay="a week", windows=["1h"], event_types=["transaction"],
        )  # fmt: skip
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "events/types.yaml").write_text(
        FILES["events/types.yaml"].replace("refers_to_event_id", "about").replace("entity_id", "x")
    )
    with pytest.raises(DefinitionError) as caught:
        load_project(tmp_path)
    assert any("labelled aggregations need" in p.reason for p in caught.value.problems)
