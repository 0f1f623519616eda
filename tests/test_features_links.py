"""Link features: ``labelled_neighbours`` counts the window's neighbours labelled at event time.

``device.mule_accounts_1h``: the distinct accounts seen with the device in the last hour that carry
the risk label ``mule`` (ops store) in force at the event's time. Random event streams and random
label histories (added, removed, expiring; edges on event times) go through the online engine —
its index receiving each label change only when the bank's clock reaches it, as in production —
and through the offline query over the full history: the values must be identical.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from decisionloop.engine.engine import build_engine, compile_project
from decisionloop.errors import DefinitionError, InputError
from decisionloop.features import online as online_module
from decisionloop.features.offline import compile_offline, offline_features
from decisionloop.features.online import compile_features
from decisionloop.ops.history import register_history
from decisionloop.ops.index import LookupIndex
from decisionloop.ops.store import Label, Removal
from decisionloop.project.definitions import FeatureSpec
from decisionloop.project.loader import Project, load_project
from decisionloop.project.scaffold import init_project
from decisionloop.storage.duckdb_source import SCHEMA

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
LATENESS = timedelta(minutes=5)
FILES = {
    "project.yaml": "name: links\nallowed_lateness: 5m\n",
    "entities.yaml": """
entities:
  customer: {key: customer_id}
  account: {key: account_id}
  device: {key: device_id}
  ip: {key: ip}
""",
    "events/types.yaml": """
event_types:
  transaction:
    entities: {customer: required, account: required, device: optional, ip: optional}
    fields:
      amount: {type: number}
  login:
    entities: {customer: required, device: required, ip: optional}
    fields:
      success: {type: boolean, required: true}
""",
    "features/links.yaml": """
features:
  - {name: mule_accounts, entity: device, aggregation: labelled_neighbours, field: account_id,
     neighbour: account, label: mule, windows: [1m, 1h], event_types: [transaction]}
  - {name: accounts, entity: device, aggregation: distinct_count, field: account_id,
     windows: [1h], event_types: [transaction]}
  - {name: big_mules_before, entity: device, aggregation: labelled_neighbours,
     field: account_id, neighbour: account, label: mule, windows: [1h],
     event_types: [transaction], filter: amount > 10, include_current: false}
  - {name: flagged_customers, entity: ip, aggregation: labelled_neighbours, field: customer_id,
     neighbour: customer, label: mule, windows: [10m], event_types: [transaction, login]}
  - {name: vip_devices, entity: customer, aggregation: labelled_neighbours, field: device_id,
     neighbour: device, label: vip, windows: [1h], event_types: [login, transaction]}
  - {name: is_mule, entity: account, aggregation: labelled_neighbours, field: account_id,
     neighbour: account, label: mule, windows: [1h], event_types: [transaction]}
""",
}


def examples(count: int) -> settings:
    """Derandomized and without shrinking (each example runs an offline query: ~0.1 s)."""
    return settings(
        max_examples=count,
        derandomize=True,
        deadline=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return load_project(write(tmp_path_factory.mktemp("links"), FILES))


@pytest.fixture(scope="module")
def names(project: Project) -> list[str]:
    return compile_offline(project).names


# -- streams and label histories -------------------------------------------------------------------
STEPS = st.sampled_from(
    [timedelta(0)] * 2
    + [timedelta(microseconds=1), timedelta(seconds=1), timedelta(seconds=10)]
    + [timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=7), timedelta(hours=1)]
)
BEHIND = st.sampled_from([timedelta(0)] * 5 + [timedelta(seconds=10), LATENESS])


@st.composite
def streams(draw: st.DrawFn, max_size: int = 40) -> list[dict[str, Any]]:
    """Events in ingestion order, stamped behind a forward clock (ties, out of order within the
    allowed lateness), on a 10-second grid mostly so that label edges fall on event times."""
    clock = T0
    events: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, max_size))):
        clock += draw(STEPS)
        event: dict[str, Any] = {
            "event_id": f"e{index}",
            "occurred_at": (clock - draw(BEHIND)).isoformat(),
            "customer_id": draw(st.sampled_from(["C1", "C2", "C3"])),
        }
        if draw(st.integers(0, 3)):
            event.update(type="transaction", account_id=draw(st.sampled_from(["A1", "A2", "A3"])))
            event["amount"] = draw(st.none() | st.sampled_from([5.0, 50.0, 50.0]))
            for key, values in (("device_id", ["D1", "D2"]), ("ip", ["I1", "I2"])):
                if draw(st.integers(0, 3)):
                    event[key] = draw(st.sampled_from(values))
        else:
            event.update(type="login", device_id=draw(st.sampled_from(["D1", "D2"])))
            event["success"] = draw(st.booleans())
            if draw(st.booleans()):
                event["ip"] = draw(st.sampled_from(["I1", "I2"]))
        events.append(event)
    return events


OFFSETS = st.sampled_from([-3600, -60, 0, 10, 30, 60, 70, 120, 600, 3600, 7200]).map(
    lambda s: timedelta(seconds=s)
) | st.integers(-600, 7200).map(lambda s: timedelta(seconds=s))
DURATIONS = st.sampled_from([0, 10, 60, 600, 3600]).map(lambda s: timedelta(seconds=s))
# Around an event's time: the edges of "in force at t_e" (created at t_e counts, ending at t_e not).
NEAR = st.sampled_from([-10_000_000, -1_000_000, -1, 0, 0, 1, 1_000_000, 10_000_000]).map(
    lambda us: timedelta(microseconds=us)
)
KEYS = {"account": "account_id", "customer": "customer_id", "device": "device_id"}
READ = {"account": "mule", "customer": "mule", "device": "vip"}  # what the features look for
TARGETS = (
    [("account", a) for a in ("A1", "A2", "A3")]
    + [("customer", c) for c in ("C1", "C2", "C3")]
    + [("device", d) for d in ("D1", "D2")]
)


@st.composite
def histories(
    draw: st.DrawFn, max_size: int = 12, raws: list[dict[str, Any]] | None = None
) -> list[Label]:
    """Labels as the store holds them at the end: added, maybe removed, maybe expiring, some
    re-added; names ``mule`` and ``vip`` on every entity type (only some are read). With the
    stream (``raws``), most labels are on an entity of one of its events, and most starts and
    ends fall on or next to an event's time."""
    times = sorted({datetime.fromisoformat(raw["occurred_at"]) for raw in raws or []})

    def instant(after: datetime | None = None) -> datetime:
        later = [t for t in times if after is None or t >= after]
        if later and draw(st.integers(0, 3)):
            at = draw(st.sampled_from(later)) + draw(NEAR)
            return at if after is None else max(at, after)
        if after is None:
            return T0 + draw(OFFSETS)
        return after + draw(DURATIONS)

    labels = []
    for i in range(draw(st.integers(0, max_size))):
        entity_type, entity_id = draw(st.sampled_from(TARGETS))
        if raws and draw(st.integers(0, 2)):
            about = draw(st.sampled_from(raws))
            carried = [(e, about[k]) for e, k in KEYS.items() if about.get(k) is not None]
            entity_type, entity_id = draw(st.sampled_from(carried))
        created = instant()
        expires = instant(created) if draw(st.booleans()) else None
        removed = instant(created) if draw(st.booleans()) else None
        labels.append(
            Label(
                id=i + 1,
                entity_type=entity_type,
                entity_id=entity_id,
                label=draw(st.sampled_from([READ[entity_type]] * 3 + ["mule", "vip"])),
                reason="drawn",
                source="api",
                source_ref=None,
                author="test",
                created_at=created,
                expires_at=expires,
                removed=None if removed is None else Removal("test", removed, "drawn"),
            )
        )
    return labels


@dataclass
class Change:
    """What the bank's clock sees happen to the store: a label added or removed at ``at``."""

    at: datetime
    label: Label


def changes(history: list[Label]) -> list[Change]:
    """The history replayed as it happened: each label added without its removal, then removed."""
    found = []
    for label in history:
        found.append(Change(label.created_at, replace(label, removed=None)))
        if label.removed is not None:
            found.append(Change(label.removed.at, label))
    return sorted(found, key=lambda c: c.at)


# -- both engines ---------------------------------------------------------------------------------
def run_online(
    project: Project,
    raws: list[dict[str, Any]],
    history: list[Label],
    latency: list[timedelta] | None = None,
) -> list[dict[str, Any]]:
    """Each event decided when the bank's clock is at the latest event time so far (plus a
    latency): the index holds only the label changes made by then, as the API applies them."""
    index = LookupIndex()
    engine = build_engine(project, index)
    pending = changes(history)
    seen = []
    clock = datetime.min.replace(tzinfo=UTC)
    for i, raw in enumerate(raws):
        event = engine.catalog.validate(raw)
        clock = max(clock, event.occurred_at + (latency[i] if latency else timedelta(0)))
        while pending and pending[0].at <= clock:
            index.apply_labels([pending.pop(0).label])
        seen.append(engine.features.observe(event))
    return seen


def store(raws: list[dict[str, Any]], history: list[Label]) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute(SCHEMA)
    instants = pa.timestamp("us", tz="UTC")
    rows = pa.table(
        {
            "seq": pa.array(range(len(raws)), pa.int64()),
            "event_id": [raw["event_id"] for raw in raws],
            "event_type": [raw["type"] for raw in raws],
            "occurred_at": pa.array(
                [datetime.fromisoformat(raw["occurred_at"]) for raw in raws], instants
            ),
            "ingested_at": pa.array([T0] * len(raws), instants),
            "payload": [orjson.dumps(raw).decode() for raw in raws],
        }
    )
    connection.register("new_events", rows)
    connection.execute("INSERT INTO events SELECT * FROM new_events")
    connection.unregister("new_events")
    register_history(connection, history, [])
    return connection


def offline(project: Project, connection: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = connection.sql(compile_offline(project).sql).pl().to_dicts()
    return rows


def mismatches(
    names: list[str], seen: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> list[str]:
    assert len(seen) == len(rows)
    found = []
    for values, row in zip(seen, rows, strict=True):
        for name in names:
            online, stored = values.get(name), row[name]
            if online != stored or type(online) is not type(stored):
                found.append(f"{row['event_id']} {name}: online {online!r} offline {stored!r}")
    return found


# -- the properties -------------------------------------------------------------------------------
@st.composite
def streams_and_histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[Label]]:
    raws = draw(streams())
    return raws, draw(histories(max_size=16, raws=raws))


@examples(60)
@given(
    drawn=streams_and_histories(),
    latency=st.lists(st.sampled_from([timedelta(0), timedelta(seconds=1)]), min_size=40),
)
def test_online_equals_offline_for_random_label_histories(
    project: Project,
    names: list[str],
    drawn: tuple[list[dict[str, Any]], list[Label]],
    latency: list[timedelta],
) -> None:
    raws, history = drawn
    rows = offline(project, store(raws, history))
    assert mismatches(names, run_online(project, raws, history, latency), rows) == []
    with pytest.MonkeyPatch.context() as patch:  # busy entities' paths: cursors, eviction
        patch.setattr(online_module, "CURSOR_MIN", -1)
        patch.setattr(online_module, "EVICT_BATCH", 1)
        assert mismatches(names, run_online(project, raws, history), rows) == []


@examples(25)
@given(raws=streams(max_size=30), history=histories(), later=histories(max_size=8))
def test_a_label_changed_after_an_event_never_changes_its_offline_value(
    project: Project, raws: list[dict[str, Any]], history: list[Label], later: list[Label]
) -> None:
    """Labels added after every event (even a microsecond after), and the existing ones removed
    or expired after it: no offline row may change."""
    connection = store(raws, history)
    before = offline(project, connection)
    last = max(datetime.fromisoformat(raw["occurred_at"]) for raw in raws)
    # Drawn labels start at T0 - 1h or later: shifted by this, they start after the last event.
    shift = last + timedelta(microseconds=1) - (T0 - timedelta(hours=1))
    moved = [
        replace(
            x,
            id=100 + x.id,
            created_at=x.created_at + shift,
            expires_at=None if x.expires_at is None else x.expires_at + shift,
            removed=None if x.removed is None else replace(x.removed, at=x.removed.at + shift),
        )
        for x in later
    ]
    just_after = max([last, *(x.created_at for x in history)]) + timedelta(microseconds=1)
    ended = [replace(x, removed=x.removed or Removal("test", just_after, "later")) for x in history]
    register_history(connection, ended + moved, [])
    assert offline(project, connection) == before


def test_neighbours_are_counted_while_their_label_is_in_force(project: Project) -> None:
    def txn(i: int, minutes: float, account: str) -> dict[str, Any]:
        at = T0 + timedelta(minutes=minutes)
        return {
            "event_id": f"e{i}",
            "type": "transaction",
            "occurred_at": at.isoformat(),
            "customer_id": "C1",
            "account_id": account,
            "device_id": "D1",
            "amount": 50.0,
        }

    def mule(i: int, account: str, minutes: int, **ends: Any) -> Label:
        created = T0 + timedelta(minutes=minutes)
        return Label(i, "account", account, "mule", "r", "api", None, "a", created, **ends)

    history = [
        mule(1, "A2", 5),  # from 5m on
        mule(2, "A3", 0, expires_at=T0 + timedelta(minutes=12)),  # until 12m, exclusive
        mule(3, "A1", 20, removed=Removal("a", T0 + timedelta(minutes=30), "cleared")),
        mule(4, "A1", 16),  # in force from 16m: A1 is labelled twice for a while, counted once
        mule(5, "A4", 31),  # added at e5's very time: in force for it
    ]
    raws = [
        txn(0, 0, "A1"),
        txn(1, 4, "A2"),  # A2 is not a mule yet
        txn(2, 8, "A3"),  # A2 and A3 are
        txn(3, 12, "A3"),  # A3's label expired at 12m exactly
        txn(4, 25, "A1"),
        txn(5, 31, "A4"),  # A1 is still labelled (label 4)
        txn(6, 90, "A4"),  # the others left the hour (e5 at 31m is in (30m, 90m])
    ]
    rows = offline(project, store(raws, history))
    assert [row["device.mule_accounts_1h"] for row in rows] == [0, 0, 2, 1, 2, 3, 1]
    assert [row["device.accounts_1h"] for row in rows] == [1, 2, 3, 3, 3, 4, 1]
    assert [row["account.is_mule_1h"] for row in rows] == [0, 0, 1, 0, 1, 1, 1]
    assert [row["device.big_mules_before_1h"] for row in rows] == [0, 0, 1, 1, 2, 2, 1]
    assert (
        mismatches(compile_offline(project).names, run_online(project, raws, history), rows) == []
    )


def test_offline_features_need_the_label_history(project: Project) -> None:
    raws = [
        {
            "event_id": "e0",
            "type": "login",
            "occurred_at": T0.isoformat(),
            "customer_id": "C1",
            "device_id": "D1",
            "success": True,
        }
    ]
    connection = store(raws, [])
    connection.unregister("dl_label_history")
    with pytest.raises(InputError, match="no label history"):
        offline_features(connection, project)
    vip = Label(1, "device", "D1", "vip", "r", "api", None, "a", T0)
    frame = offline_features(connection, project, labels=[vip])
    assert frame["customer.vip_devices_1h"].to_list() == [1]
    assert compile_offline(project).label_history


def test_projects_without_link_features_keep_their_hot_path(project: Project) -> None:
    others = [f for f in project.features if f.aggregation != "labelled_neighbours"]
    keys = {name: entity.key for name, entity in project.entities.items()}
    source = compile_features(others, keys, {}).source
    assert "N0_" not in source
    assert "G0(" not in source
    assert not compile_offline(others, entity_keys=keys, event_types=_types(project)).label_history


def _types(project: Project) -> dict[str, Any]:
    return build_engine(project).catalog.types


# -- definitions ----------------------------------------------------------------------------------
def test_a_link_definition_needs_its_label_and_neighbour() -> None:
    base: dict[str, Any] = {
        "name": "x",
        "entity": "device",
        "aggregation": "labelled_neighbours",
        "field": "account_id",
        "windows": ["1h"],
        "event_types": ["transaction"],
    }
    with pytest.raises(ValidationError, match="needs a `label`"):
        FeatureSpec(**base, neighbour="account")
    with pytest.raises(ValidationError, match="needs a `neighbour`"):
        FeatureSpec(**base, label="mule")
    with pytest.raises(ValidationError, match="only read by labelled_neighbours"):
        FeatureSpec(**{**base, "aggregation": "distinct_count"}, neighbour="account")


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


LINKS = """\
features:
  - name: mule_accounts
    entity: device
    aggregation: labelled_neighbours
    field: account_id
    neighbour: acount
    label: mule
    windows: [7d]
    event_types: [transaction]
  - name: mule_devices
    entity: customer
    aggregation: labelled_neighbours
    field: ip
    neighbour: device
    label: mule
    windows: [7d]
    event_types: [login]
  - name: mule_payees
    entity: customer
    aggregation: labelled_neighbours
    field: counterparty_account_id
    neighbour: account
    label: mule
    windows: [7d]
    event_types: [transaction]
"""
NO_LABEL = """features:
  - name: no_label
    entity: device
    aggregation: labelled_neighbours
    field: account_id
    neighbour: account
    windows: [7d]
    event_types: [transaction]
"""


def test_link_mistakes_are_reported_where_they_are_written(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    init_project(root)
    (root / "features" / "links.yaml").write_text(LINKS)
    (root / "features" / "no_label.yaml").write_text(NO_LABEL)
    found = load_project(root, strict=False).problems
    problems = [(p.line, p.reason) for p in found if p.file == "features/links.yaml"]
    assert (_line_of(LINKS, "neighbour: acount"), "unknown neighbour entity 'acount'") in problems
    assert (
        _line_of(LINKS, "field: ip"),
        "'ip' is the key of entity 'ip'; neighbour 'device' needs 'device_id'",
    ) in problems
    assert (
        _line_of(LINKS, "field: counterparty_account_id"),
        "'counterparty_account_id' is not an entity key; neighbour 'account' needs 'account_id'",
    ) in problems
    assert [(p.line, p.reason) for p in found if p.file == "features/no_label.yaml"] == [
        (2, "Value error, labelled_neighbours needs a `label` (e.g. label: fraud)")
    ]
    with pytest.raises(DefinitionError) as caught:  # validate's path: located, once
        compile_project(root)
    assert [p.line for p in caught.value.problems if "neighbour entity" in p.reason] == [6]


TEMPLATE = """\
templates:
  - name: "{label}_{aggregation}"
    entities: [device, ip]
    aggregations: [labelled_neighbours, distinct_count]
    field: account_id
    neighbour: account
    label: mule
    windows: [1h, 7d]
    event_types: [transaction]
"""


def test_templates_declare_link_features(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    init_project(root)
    (root / "features" / "templates.yaml").write_text(TEMPLATE)
    names = set(build_engine(load_project(root)).features.names)
    assert {
        f"{entity}.mule_{aggregation}_{window}"
        for entity in ("device", "ip")
        for aggregation in ("labelled_neighbours", "distinct_count")
        for window in ("1h", "7d")
    } <= names
    (root / "features" / "templates.yaml").write_text(TEMPLATE.replace("    label: mule\n", ""))
    problems = [
        (p.line, p.reason)
        for p in load_project(root, strict=False).problems
        if p.file == "features/templates.yaml"
    ]
    assert problems == [(4, "labelled_neighbours needs a `label` (e.g. label: fraud)")]
    (root / "features" / "templates.yaml").write_text(TEMPLATE.replace("account\n", "acount\n"))
    problems = [
        (p.line, p.reason)
        for p in load_project(root, strict=False).problems
        if p.file == "features/templates.yaml"
    ]
    assert problems == [(6, "unknown neighbour entity 'acount'; did you mean 'account'?")]
