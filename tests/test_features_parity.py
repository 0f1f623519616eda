"""Online and offline features are identical: random streams, every aggregation and window.

Each hypothesis example is a random event stream over a few customers, devices and merchants —
ties in time, NULL and missing values, negative and ``-0.0`` amounts, integers in a number field,
out-of-order arrivals within the allowed lateness, filters with division by zero and negative
modulo. The stream goes through the online engine event by event (recording what each event saw)
and into a DuckDB source layer with the production schema; the offline query must give the very
same values (same type, same bits) for every event and every feature name.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import duckdb
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from decisionloop.domain.events import Event, EventCatalog, EventType
from decisionloop.engine.engine import build_engine
from decisionloop.engine.service import DecisionService
from decisionloop.features import online as online_module
from decisionloop.features.derived import names_by_type, project_derived
from decisionloop.features.offline import compile_offline, offline_features
from decisionloop.features.online import OnlineFeatures, compile_features
from decisionloop.features.semantics import wide_float
from decisionloop.project.definitions import FIELDLESS, LABELLED, NEIGHBOURS, FeatureSpec
from decisionloop.project.loader import Project, load_project
from decisionloop.rules.expressions import Compiler, Source
from decisionloop.storage.duckdb_source import SCHEMA
from decisionloop.storage.memory import MemorySourceLog
from decisionloop.storage.ports import Record

LATENESS = timedelta(minutes=5)
# labelled_neighbours reads the ops store's label history too: tests/test_features_links.py.
AGGREGATIONS = [
    a for a in get_args(FeatureSpec.model_fields["aggregation"].annotation) if a != NEIGHBOURS
]
T0 = datetime(2026, 6, 1, 11, 58, tzinfo=UTC)


def examples(count: int) -> settings:
    """Deterministic runs (derandomized), sized so that the whole file stays well under 60 s:
    one offline query costs about 0.1 s whatever the stream's size. No shrinking: at that cost
    it runs for minutes; a failure lists its mismatching event ids and feature names instead."""
    return settings(
        max_examples=count,
        derandomize=True,
        deadline=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


PROJECT_FILES = {
    "project.yaml": "name: parity\n",
    "entities.yaml": """
entities:
  customer: {key: customer_id}
  device: {key: device_id}
  merchant: {key: merchant_id}
""",
    "events/types.yaml": """
event_types:
  txn:
    entities: {customer: required, device: optional, merchant: optional}
    fields:
      amount: {type: number, min: -1000000000, max: 1000000000}
      qty: {type: integer, min: -1000, max: 1000}
      channel: {type: enum, values: [a, b, c]}
      flag: {type: boolean}
      note: {type: string}
      at: {type: timestamp}
  login:
    entities: {customer: required, device: required}
    fields:
      success: {type: boolean, required: true}
      amount: {type: number, min: -1000000000, max: 1000000000}
  label:
    entities: {customer: optional}
    fields:
      label: {type: string, required: true}
      refers_to_event_id: {type: string}
      entity_type: {type: string}
      entity_id: {type: string}
""",
    "features/all.yaml": """
features:
  - {name: txns, entity: customer, aggregation: count, windows: [10s, 1m, 1h],
     event_types: [txn]}
  - {name: txns_before, entity: customer, aggregation: count, windows: [1m, 1h],
     event_types: [txn], include_current: false}
  - {name: amount_sum, entity: customer, aggregation: sum, field: amount,
     windows: [10s, 1m, 1h], event_types: [txn, login]}
  - {name: a_sum_before, entity: customer, aggregation: sum, field: amount, windows: [1m],
     event_types: [txn], filter: "channel = 'a'", include_current: false}
  - {name: amount_avg, entity: customer, aggregation: avg, field: amount, windows: [1m, 1h],
     event_types: [txn]}
  - {name: amount_min, entity: customer, aggregation: min, field: amount, windows: [1m, 1h],
     event_types: [txn], filter: amount > 0 or flag}
  - {name: amount_max, entity: customer, aggregation: max, field: amount, windows: [1m],
     event_types: [txn], include_current: false}
  - {name: qty_sum, entity: customer, aggregation: sum, field: qty, windows: [1m, 1h],
     event_types: [txn], filter: "qty % 3 <> 1"}
  - {name: qty_avg, entity: customer, aggregation: avg, field: qty, windows: [1h],
     event_types: [txn], filter: amount / qty > 1.5 or qty is null}
  - {name: channels, entity: customer, aggregation: distinct_count, field: channel,
     windows: [1h], event_types: [txn]}
  - {name: amounts, entity: customer, aggregation: distinct_count, field: amount,
     windows: [1m], event_types: [txn], include_current: false}
  - {name: notes_min, entity: customer, aggregation: min, field: note, windows: [1h],
     event_types: [txn]}
  - {name: latest_at, entity: customer, aggregation: max, field: at, windows: [1h],
     event_types: [txn], filter: "at < occurred_at"}
  - {name: flags_max, entity: customer, aggregation: max, field: flag, windows: [1m],
     event_types: [txn]}
  - {name: afternoon, entity: customer, aggregation: count, windows: [1h],
     event_types: [txn, login], filter: "hour(occurred_at) >= 12 and dayofweek(occurred_at) = 1"}
  - {name: labels, entity: customer, aggregation: count, windows: [1h], event_types: [label]}
  - {name: failed_logins, entity: device, aggregation: count, windows: [1m, 1h],
     event_types: [login], filter: not success}
  - {name: customers, entity: device, aggregation: distinct_count, field: customer_id,
     windows: [1h], event_types: [txn, login]}
  - {name: merchant_sum, entity: merchant, aggregation: sum, field: amount, windows: [1m],
     event_types: [txn], include_current: false}
  - {name: merchant_qty_min, entity: merchant, aggregation: min, field: qty, windows: [10s],
     event_types: [txn], filter: "coalesce(channel, 'z') in ('a', 'z')"}
  - {name: amount_sd, entity: customer, aggregation: stddev, field: amount, windows: [1m, 1h],
     event_types: [txn, login]}
  - {name: qty_sd, entity: customer, aggregation: stddev, field: qty, windows: [1h],
     event_types: [txn], filter: "qty % 3 <> 1", include_current: false}
  - {name: seen, entity: customer, aggregation: first_seen_age, windows: [1m, 1h],
     event_types: [txn]}
  - {name: a_seen_before, entity: customer, aggregation: first_seen_age, windows: [1h],
     event_types: [txn], filter: "channel = 'a'", include_current: false}
  - {name: since, entity: customer, aggregation: time_since_last, windows: [1m, 1h],
     event_types: [txn]}
  - {name: since_positive, entity: customer, aggregation: time_since_last, windows: [1h],
     event_types: [txn, login], filter: amount > 0}
  - {name: device_seen, entity: device, aggregation: first_seen_age, windows: [1h],
     event_types: [txn, login], filter: "not coalesce(flag, false)"}
  - {name: merchant_since, entity: merchant, aggregation: time_since_last, windows: [10s],
     event_types: [txn], include_current: false}
  - {name: merchant_sd, entity: merchant, aggregation: stddev, field: amount, windows: [10s],
     event_types: [txn], include_current: false}
  - {name: fraud_share, entity: customer, aggregation: labelled_share, label: fraud,
     windows: [1m, 1h], event_types: [txn]}
  - {name: fraud_before, entity: customer, aggregation: labelled_count, label: fraud,
     windows: [10s, 1h], event_types: [txn, login], filter: amount > 0, include_current: false}
  - {name: disputed, entity: customer, aggregation: labelled_count, label: dispute,
     windows: [1h], event_types: [txn]}
  - {name: device_fraud, entity: device, aggregation: labelled_share, label: fraud,
     windows: [1m], event_types: [txn, login], include_current: false}
  - {name: fraud_share_known, entity: customer, aggregation: labelled_share, label: fraud,
     windows: [1m, 1h], label_delay: 1m, event_types: [txn]}
  - {name: device_fraud_known, entity: device, aggregation: labelled_count, label: fraud,
     windows: [10s], label_delay: 30s, event_types: [txn, login], include_current: false}
derived:
  - {name: burst, expression: "customer.txns_1m * 2 + coalesce(amount_vs_avg, 0)",
     event_types: [txn]}
  - {name: amount_vs_avg, expression: amount / customer.amount_avg_1h, event_types: [txn]}
  - {name: gap_or_hour, expression: "coalesce(customer.since_1h, hour(occurred_at) - 0.5)",
     event_types: [txn, login]}
  - {name: qty_twice, expression: "qty * 2 + 1", event_types: [txn]}
""",
}


@dataclass
class Setup:
    project: Project
    catalog: EventCatalog
    types: dict[str, EventType]
    sql: str
    names: list[str]

    def online(self) -> OnlineFeatures:
        """Online features compiled as the engine does, with the declared field types."""
        project = self.project
        filters: dict[str, Callable[[Event], bool]] = {}
        for spec in project.features:
            if spec.filter:
                scope = {"occurred_at"}.union(*(self.types[t].fields for t in spec.event_types))
                source = project.expression_source(f"feature:{spec.name}", ("filter",))
                predicate, _ = Compiler(scope).compile(spec.filter, source)
                filters[spec.name] = _applies(predicate)
        online = compile_features(
            project.features,
            {name: e.key for name, e in project.entities.items()},
            filters,
            event_types=self.types,
            allowed_lateness="5m",
        )
        read = names_by_type(((f.key_field, f.names) for f in online.features), self.types)
        derived, problems = project_derived(project, self.types, read)
        assert problems == []
        online.add_derived(derived)
        return online


def _applies(predicate: Callable[[dict[str, Any]], Any]) -> Callable[[Event], bool]:
    return lambda event: predicate({**event.values, "occurred_at": event.occurred_at}) is True


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("parity")
    for name, text in PROJECT_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    project = load_project(root)
    engine = build_engine(project)
    query = compile_offline(project)
    return Setup(project, engine.catalog, engine.catalog.types, query.sql, query.names)


# -- random streams -------------------------------------------------------------------------------
AMOUNTS = st.one_of(
    st.none(),
    st.sampled_from([0.0, -0.0, 0.1, 0.2, 0.3, 0.5, 2.5, 1e-7, 123.456789, 1e9, -1e9]),
    st.integers(-1000, 1000),
    st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False),
)
STEPS = st.sampled_from(
    [timedelta(0)] * 3
    + [timedelta(microseconds=1), timedelta(seconds=1), timedelta(seconds=10)]
    + [timedelta(seconds=59), timedelta(minutes=1), timedelta(minutes=7), timedelta(hours=1)]
)
# How far behind the latest event time an event is stamped: ties and out-of-order arrivals.
IN_TIME = st.sampled_from(
    [timedelta(0)] * 6 + [timedelta(seconds=1), timedelta(seconds=10), LATENESS]
) | st.integers(0, 300_000_000).map(lambda us: timedelta(microseconds=us))

# Some events beyond the allowed lateness too.
WITH_LATE = IN_TIME | st.sampled_from([timedelta(minutes=20), timedelta(hours=2)])


@st.composite
def raw_event(
    draw: st.DrawFn, index: int, occurred_at: datetime, forward: bool = True
) -> dict[str, Any]:
    kind = draw(st.sampled_from(["txn", "txn", "txn", "login", "label"]))
    event: dict[str, Any] = {
        "event_id": f"e{index}",
        "type": kind,
        "occurred_at": occurred_at.isoformat(),
    }
    customer = draw(st.sampled_from(["C1", "C2", "C3"]))
    if kind == "txn":
        optional: dict[str, Any] = {
            "device_id": draw(st.sampled_from(["D1", "D2"])),
            "merchant_id": draw(st.sampled_from(["M1", "M2"])),
            "amount": draw(AMOUNTS),
            "qty": draw(st.none() | st.integers(-5, 5)),
            "channel": draw(st.none() | st.sampled_from(["a", "b", "c"])),
            "flag": draw(st.none() | st.booleans()),
            "note": draw(st.none() | st.sampled_from(["x", "y", "Y", "é", ""])),
            "at": draw(
                st.none()
                | st.integers(-7200, 600).map(
                    lambda s: (occurred_at + timedelta(seconds=s)).isoformat()
                )
            ),
        }
        event["customer_id"] = customer
        for name, value in optional.items():
            if draw(st.integers(0, 4)) == 0:
                continue  # missing altogether
            event[name] = value  # possibly JSON null
    elif kind == "login":
        event.update(
            customer_id=customer,
            device_id=draw(st.sampled_from(["D1", "D2"])),
            success=draw(st.booleans()),
        )
        if draw(st.booleans()):
            event["amount"] = draw(AMOUNTS)
    else:
        # A label learnt late: about an earlier event (most often), a later one (it arrives
        # before its event), itself or no event; duplicates and other labels too.
        event["label"] = draw(st.sampled_from(["fraud", "fraud", "fraud", "dispute"]))
        about = draw(st.integers(max(-1, index - 30), index + (2 if forward else -1)))
        target = f"e{about}" if about >= 0 else None
        if draw(st.booleans()):
            event["refers_to_event_id"] = target
        else:
            event.update(entity_type=draw(st.sampled_from(["event", "event", "customer"])))
            event["entity_id"] = target or customer
        if draw(st.booleans()):
            event["customer_id"] = customer
    return event


@st.composite
def streams(
    draw: st.DrawFn,
    behind: st.SearchStrategy[timedelta] = IN_TIME,
    max_size: int = 40,
    forward: bool = True,
) -> list[dict[str, Any]]:
    """Events in ingestion order: a clock that moves forward, each event stamped behind it.
    ``forward``: labels may name an event that arrives after them; without it a label names
    earlier events only and is stamped no earlier than them (a label's time is when the bank
    learnt it: what a restart's look-back relies on)."""
    size = draw(st.integers(1, max_size))
    clock = T0
    events: list[dict[str, Any]] = []
    for index in range(size):
        clock += draw(STEPS)
        event = draw(raw_event(index, clock - draw(behind), forward))
        if event["type"] == "label" and not forward:
            about = event.get("refers_to_event_id") or event.get("entity_id")
            named = next((e for e in events if e["event_id"] == about), None)
            if named is not None:
                event["occurred_at"] = max(
                    event["occurred_at"], named["occurred_at"], key=datetime.fromisoformat
                )
        events.append(event)
    return _bounded_early_labels(events)


def _bounded_early_labels(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A label that arrives before the event it names waits for it online for one retention
    period (at least the allowed lateness) of watermark, then is forgotten: best effort, as the
    semantics say. Exact parity holds within that bound, so a label waiting longer is re-pointed
    at the event before it."""
    watermarks: list[datetime] = []
    for event in events:
        at = datetime.fromisoformat(event["occurred_at"])
        watermarks.append(max(at, watermarks[-1]) if watermarks else at)
    for i, event in enumerate(events):
        field = "refers_to_event_id" if event.get("refers_to_event_id") else "entity_id"
        target = event.get(field) if event["type"] == "label" else None
        j = int(target[1:]) if isinstance(target, str) and target[1:].isdigit() else -1
        if i < j < len(events) and watermarks[j] - watermarks[i] > LATENESS:
            event[field] = f"e{max(i - 1, 0)}"
    return events


# -- running both engines ------------------------------------------------------------------------
def run_online(
    setup: Setup, raws: list[dict[str, Any]], variant: str = "generated"
) -> tuple[OnlineFeatures, list[Any]]:
    """Feed the stream; ``incremental``: with the paths that busy entities take forced (cursors
    for min/max/distinct_count on every window, eviction after every event)."""
    with pytest.MonkeyPatch.context() as patch:
        if variant == "incremental":
            patch.setattr(online_module, "CURSOR_MIN", -1)
            patch.setattr(online_module, "EVICT_BATCH", 1)
        online = setup.online()
        seen = [online.observe(setup.catalog.validate(raw)) for raw in raws]
    return online, seen


def store(raws: list[dict[str, Any]], setup: Setup) -> duckdb.DuckDBPyConnection:
    """A DuckDB source layer (the production schema) holding the events in ingestion order."""
    connection = duckdb.connect()
    connection.execute(SCHEMA)
    append(connection, raws, setup, first_seq=0)
    return connection


def append(
    connection: duckdb.DuckDBPyConnection,
    raws: list[dict[str, Any]],
    setup: Setup,
    first_seq: int,
) -> None:
    events = [setup.catalog.validate(raw) for raw in raws]
    instants = pa.timestamp("us", tz="UTC")
    rows = pa.table(
        {
            "seq": pa.array(range(first_seq, first_seq + len(raws)), pa.int64()),
            "event_id": [e.event_id for e in events],
            "event_type": [e.type for e in events],
            "occurred_at": pa.array([e.occurred_at for e in events], instants),
            "ingested_at": pa.array([T0 + timedelta(hours=2)] * len(events), instants),
            "payload": [orjson.dumps(raw).decode() for raw in raws],
        }
    )
    connection.register("new_events", rows)
    connection.execute("INSERT INTO events SELECT * FROM new_events")
    connection.unregister("new_events")


def offline_rows(setup: Setup, connection: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return connection.sql(setup.sql).pl().to_dicts()


def identical(a: Any, b: Any) -> bool:
    """Same type and same value; floats to the bit (repr round-trips a double exactly)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b) or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def mismatches(
    setup: Setup,
    seen: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    skip: set[int] = frozenset(),
) -> Iterator[str]:
    assert len(rows) == len(seen)
    for index, (online, offline) in enumerate(zip(seen, rows, strict=True)):
        assert offline["event_id"] == f"e{index}"
        if index in skip:
            continue
        for name in setup.names:
            if not identical(online.get(name), offline[name]):
                yield f"e{index} {name}: online {online.get(name)!r} offline {offline[name]!r}"


# -- the properties -----------------------------------------------------------------------------
@examples(60)
@given(raws=streams())
def test_online_equals_offline_within_lateness(setup: Setup, raws: list[dict[str, Any]]) -> None:
    online, seen = run_online(setup, raws)
    assert online.late_events == 0
    rows = offline_rows(setup, store(raws, setup))
    assert list(mismatches(setup, seen, rows)) == []
    _, incremental = run_online(setup, raws, "incremental")
    assert list(mismatches(setup, incremental, rows)) == []


@st.composite
def definitions(draw: st.DrawFn) -> FeatureSpec:
    """One random definition: any aggregation, entity, windows, filter and include_current."""
    aggregation = draw(st.sampled_from(AGGREGATIONS))
    entity = draw(st.sampled_from(["customer", "device", "merchant"]))
    event_types = (
        ["txn"] if entity == "merchant" else draw(st.sampled_from([["txn"], ["txn", "login"]]))
    )
    fields = {"sum": ["amount", "qty"], "avg": ["amount", "qty"], "stddev": ["amount", "qty"]}
    choices = fields.get(aggregation, ["amount", "qty", "channel", "note", "at"])
    return FeatureSpec(
        name="drawn",
        entity=entity,
        aggregation=aggregation,
        field=None if aggregation in FIELDLESS else draw(st.sampled_from(choices)),
        windows=draw(st.lists(st.sampled_from(["10s", "1m", "1h"]), min_size=1, unique=True)),
        event_types=event_types,
        filter=draw(st.sampled_from([None, "amount > 0", "amount is null or amount < 100"])),
        include_current=draw(st.booleans()),
        label=draw(st.sampled_from(["fraud", "dispute"])) if aggregation in LABELLED else None,
        label_delay=(
            draw(st.sampled_from([None, "0s", "10s", "1m"])) if aggregation in LABELLED else None
        ),
    )


@examples(40)
@given(spec=definitions(), raws=streams(max_size=30))
def test_any_single_definition_is_identical_online_and_offline(
    setup: Setup, spec: FeatureSpec, raws: list[dict[str, Any]]
) -> None:
    keys = {name: e.key for name, e in setup.project.entities.items()}
    filters = {}
    if spec.filter:
        scope = {"occurred_at"}.union(*(setup.types[t].fields for t in spec.event_types))
        predicate, _ = Compiler(scope).compile(spec.filter, Source("feature drawn"))
        filters[spec.name] = _applies(predicate)
    online = compile_features([spec], keys, filters, event_types=setup.types, allowed_lateness="5m")
    seen = [online.observe(setup.catalog.validate(raw)) for raw in raws]
    query = compile_offline([spec], entity_keys=keys, event_types=setup.types)
    drawn = Setup(setup.project, setup.catalog, setup.types, query.sql, query.names)
    rows = offline_rows(drawn, store(raws, setup))
    assert list(mismatches(drawn, seen, rows)) == []


@examples(40)
@given(raws=streams(behind=WITH_LATE))
def test_late_events_are_counted_and_never_disturb_in_time_events(
    setup: Setup, raws: list[dict[str, Any]]
) -> None:
    online, seen = run_online(setup, raws)
    late: set[int] = set()
    latest = None
    for index, raw in enumerate(raws):
        occurred = datetime.fromisoformat(raw["occurred_at"])
        if latest is not None and occurred < latest - LATENESS:
            late.add(index)
        latest = occurred if latest is None else max(latest, occurred)
    assert online.late_events == len(late)
    rows = offline_rows(setup, store(raws, setup))
    assert list(mismatches(setup, seen, rows, skip=late)) == []
    _, incremental = run_online(setup, raws, "incremental")
    assert incremental == seen  # late events' own (cut) values too


@examples(60)
@given(raws=streams(behind=WITH_LATE, forward=False), data=st.data())
def test_restart_from_source_equals_uninterrupted(
    setup: Setup, raws: list[dict[str, Any]], data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(raws)))
    engine = build_engine(setup.project)  # as the service compiles it
    uninterrupted = [engine.features.observe(setup.catalog.validate(raw)) for raw in raws]

    source = MemorySourceLog()
    before = build_engine(setup.project)
    records = []
    for raw in raws[:split]:
        event = setup.catalog.validate(raw)
        before.observe(event)
        payload = orjson.dumps(raw)
        records.append(Record(event.event_id, event.type, event.occurred_at, T0, payload))
    source.submit(records).result()
    restarted = build_engine(setup.project)
    DecisionService(restarted, source).start()
    assert restarted.features.snapshot() == before.features.snapshot()
    after = [restarted.features.observe(setup.catalog.validate(raw)) for raw in raws[split:]]
    assert after == uninterrupted[split:]
    assert restarted.features.snapshot() == engine.features.snapshot()


@examples(25)
@given(raws=streams(max_size=30), data=st.data())
def test_a_label_arriving_later_never_changes_earlier_offline_features(
    setup: Setup, raws: list[dict[str, Any]], data: st.DataObject
) -> None:
    connection = store(raws, setup)
    before = offline_rows(setup, connection)
    # Labels learnt later, stamped at (or before) the events they are about: they carry the
    # customer and feed customer.labels_1h, yet no earlier event may see them.
    labels = []
    for index, raw in enumerate(data.draw(st.lists(st.sampled_from(raws), max_size=8))):
        labels.append(
            {
                "event_id": f"label{index}",
                "type": "label",
                "occurred_at": raw["occurred_at"],
                "customer_id": raw.get("customer_id", "C1"),
                "label": "fraud",
                "refers_to_event_id": raw["event_id"],
            }
        )
    append(connection, labels, setup, first_seq=len(raws))
    after = offline_rows(setup, connection)
    assert after[: len(before)] == before


def test_selection_by_type_and_time_matches_the_full_run(setup: Setup) -> None:
    raws = _fixed_stream()
    connection = store(raws, setup)
    full = {row["event_id"]: row for row in offline_rows(setup, connection)}
    start, end = T0 + timedelta(minutes=3), T0 + timedelta(minutes=9)
    part = offline_features(connection, setup.project, types=["txn"], start=start, end=end)
    assert part.height > 0
    for row in part.to_dicts():
        raw = raws[int(row["event_id"][1:])]
        assert raw["type"] == "txn"
        assert start <= datetime.fromisoformat(raw["occurred_at"]) < end
        assert row == full[row["event_id"]]


def _fixed_stream() -> list[dict[str, Any]]:
    events = []
    for i in range(120):
        occurred = T0 + timedelta(seconds=7 * i - (40 if i % 9 == 0 else 0))
        events.append(
            {
                "event_id": f"e{i}",
                "type": "txn" if i % 4 else "login",
                "occurred_at": occurred.isoformat(),
                "customer_id": f"C{i % 3}",
                "device_id": f"D{i % 2}",
                **(
                    {"amount": i * 1.25, "channel": "abc"[i % 3]}
                    if i % 4
                    else {"success": i % 8 == 0}
                ),
            }
        )
    return events


def test_sums_beyond_double_precision_stay_exact(setup: Setup) -> None:
    """Amounts of 999999999.999999 (odd in micro-units): running totals pass 2^53, where adding
    doubles would round; both engines still agree to the last bit."""
    raws = [
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
    _, seen = run_online(setup, raws)
    rows = offline_rows(setup, store(raws, setup))
    assert list(mismatches(setup, seen, rows)) == []
    assert seen[-1]["customer.amount_sum_1h"] == float(24 * 999999999999999 - 6) / 1e6
    # Squares near 1e30: the exact integer spread, then one defined rounding recipe.
    units = [999999999999999] * 24 + [-1] * 6
    spread = len(units) * sum(u * u for u in units) - sum(units) ** 2
    assert spread > 2**64
    expected = math.sqrt(wide_float(spread) / float(30 * 29)) / 1e6
    assert seen[-1]["customer.amount_sd_1h"] == expected
    assert expected == pytest.approx(statistics.stdev([u / 1e6 for u in units]), rel=1e-12)


def test_offline_columns_are_the_online_names_in_declaration_order(setup: Setup) -> None:
    assert setup.names == setup.online().names


def test_a_project_without_features_lists_the_events(setup: Setup) -> None:
    connection = store(_fixed_stream()[:5], setup)
    frame = offline_features(connection, [], entity_keys={}, event_types=setup.types, types=["txn"])
    assert frame.columns == ["event_id"]
    assert frame["event_id"].to_list() == ["e1", "e2", "e3"]


def test_the_example_project_compiles_offline(tmp_path: Path) -> None:
    from decisionloop.project.scaffold import init_project

    init_project(tmp_path / "example")
    query = compile_offline(load_project(tmp_path / "example"))
    connection = duckdb.connect()
    connection.execute(SCHEMA)
    assert connection.sql(query.sql).pl().columns == ["event_id", *query.names]
