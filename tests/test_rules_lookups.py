"""``has_label`` and ``in_list``: checking, and one answer from closures, online code and SQL.

Random label and list histories (added, removed, expiring) and random rows (keys and decision
times, NULLs included) are evaluated by the reference closures, the generated online function
reading the in-memory index, and DuckDB running the generated SQL (one SELECT and the backtest
path) over the store's history tables. Runs are derandomized.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decisionloop.errors import ExpressionError
from decisionloop.ops.history import DECIDED_AT_SQL, register_history
from decisionloop.ops.index import LookupIndex
from decisionloop.ops.labels import LabelService, NewLabel
from decisionloop.ops.lookups import LookupScope
from decisionloop.ops.store import OpsStore, SqlOpsStore, to_us
from decisionloop.rules import backtest
from decisionloop.rules.expressions import Checked, Compiler, Source
from decisionloop.rules.online import compile_online
from decisionloop.rules.sql import arrow_table, predicate_sql, select_sql
from decisionloop.runtime import open_service
from decisionloop.settings import Settings
from tests.conftest import transaction

T0 = datetime(2026, 6, 1, tzinfo=UTC)
TYPES: dict[str, Any] = {
    "device_id": "string",
    "customer_id": "string",
    "ip": "string",
    "amount": "number",
    "occurred_at": "timestamp",
}
ENTITIES = {"device": "device_id", "customer": "customer_id"}
PREDICATES = [
    "has_label(device, 'mule')",
    "has_label(customer, 'vip') and amount > 100",
    "not has_label(device, 'mule') or in_list('blocked_ips', ip)",
    "in_list('blocked_ips', lower(ip))",
    "in_list('allowed', coalesce(ip, 'none')) and not in_list('blocked_ips', ip)",
    "has_label(device, 'mule') and has_label(customer, 'mule')",
    "case when has_label(device, 'vip') then amount > 5 else in_list('allowed', ip) end",
]


def compiler(index: LookupIndex | None = None) -> Compiler:
    return Compiler(TYPES, lookups=LookupScope(ENTITIES, index or LookupIndex()))


def check(text: str, index: LookupIndex | None = None) -> Checked:
    return compiler(index).check(text, Source("rule r"))


def reasons(text: str) -> list[str]:
    with pytest.raises(ExpressionError) as caught:
        check(text)
    return [f"{p.reason}\n{p.highlight}" for p in caught.value.problems]


# -- checking -------------------------------------------------------------------------------------
def test_unknown_entity_suggests_the_closest() -> None:
    assert reasons("has_label(devise, 'mule')") == [
        "unknown entity 'devise'; did you mean device? (this event carries: customer, device)"
        "\nhas_label(devise, 'mule')\n          ^^^^^^"
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("has_label(device)", "has_label takes 2 arguments (entity, 'label'), got 1"),
        ("has_label(device, ip)", "has_label needs the label as a string literal"),
        ("has_label('device', 'x')", "has_label needs an entity name first"),
        ("has_label(device.x, 'x')", "has_label needs an entity name first"),
        ("in_list(ip, ip)", "in_list needs the list name as a string literal"),
        ("in_list('l', amount)", "in_list compares with string items, got number"),
        ("in_list('l')", "in_list takes 2 arguments"),
        ("has_label(device, 'x') + 1 > 0", "cannot apply '+' to boolean and integer"),
    ],
)
def test_lookup_errors_are_located(text: str, reason: str) -> None:
    found = reasons(text)
    assert any(r.startswith(reason) for r in found), found
    assert all("^" in r for r in found)


def test_without_lookups_in_scope_they_are_unknown_functions() -> None:
    with pytest.raises(ExpressionError, match="unknown function 'has_label'"):
        Compiler(TYPES).check("has_label(device_id, 'x')", Source("feature f"))


def test_a_lookup_reads_its_key_and_the_decision_time() -> None:
    checked = check("has_label(device, 'mule') and in_list('blocked_ips', ip)")
    assert checked.reads == ["ip", "device_id", "decided_at"]
    assert checked.type == "boolean"


# -- one answer from every back end -------------------------------------------------------------
MOMENTS = [T0 + timedelta(hours=h) for h in range(6)]
KEYS = ["D1", "D2", "C1"]
IPS = ["1.1.1.1", "2.2.2.2", "none"]
label_events = st.tuples(
    st.sampled_from([("device", k) for k in KEYS] + [("customer", k) for k in KEYS]),
    st.sampled_from(["mule", "vip"]),
    st.sampled_from(range(5)),  # created at hour
    st.one_of(st.none(), st.sampled_from(range(1, 4))),  # removed after hours
    st.one_of(st.none(), st.sampled_from(range(1, 4))),  # expires after hours
)
item_events = st.tuples(
    st.sampled_from(["blocked_ips", "allowed"]),
    st.sampled_from(IPS),
    st.sampled_from(range(5)),
    st.one_of(st.none(), st.sampled_from(range(1, 4))),
)
rows = st.fixed_dictionaries(
    {
        "device_id": st.one_of(st.none(), st.sampled_from(KEYS)),
        "customer_id": st.one_of(st.none(), st.sampled_from(KEYS)),
        "ip": st.one_of(st.none(), st.sampled_from(IPS)),
        "amount": st.one_of(st.none(), st.sampled_from([1.0, 50.0, 500.0])),
        "occurred_at": st.just(T0),
        # on an hour boundary, half past, or unknown: the edges of every interval are hit
        "decided_at": st.one_of(
            st.none(),
            st.sampled_from(MOMENTS + [m + timedelta(minutes=30) for m in MOMENTS]),
        ),
    }
)


def results_everywhere(store: OpsStore, sample: list[dict[str, Any]]) -> dict[str, list[Any]]:
    index = LookupIndex.from_store(store)
    checked = [check(text, index) for text in PREDICATES]
    negated = [check(f"not ({text})", index) for text in PREDICATES]
    closures = [compiler(index).closure(c) for c in checked]
    online = compile_online(checked + negated)
    n = len(checked)
    con = duckdb.connect()
    register_history(con, store.labels(), store.items())
    types: dict[str, Any] = {}
    for c in checked:
        types.update(c.types)
    con.register("events", arrow_table(sample, types))
    rules = [(f"r{i}", c) for i, c in enumerate(checked)]
    selected = con.sql(select_sql(rules, "events")).fetchall()
    bits = backtest.evaluate(con, "events", rules, three_valued=True, threads=1)
    out: dict[str, list[Any]] = {"closure": [], "online": [], "sql": [], "backtest": []}
    for row_index, row in enumerate(sample):
        out["closure"].append([f(row) for f in closures])
        fired = set(online(row))
        out["online"].append(
            [True if i in fired else False if i + n in fired else None for i in range(n)]
        )
        out["sql"].append(list(selected[row_index]))
        out["backtest"].append([bits.values(i)[row_index] for i in range(n)])
    return out


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    labels=st.lists(label_events, max_size=8),
    items=st.lists(item_events, max_size=6),
    sample=st.lists(rows, min_size=1, max_size=12),
)
def test_online_and_sql_agree(
    labels: list[Any], items: list[Any], sample: list[dict[str, Any]]
) -> None:
    store = SqlOpsStore("sqlite://")
    try:
        fill_without_double_removal(store, labels, items)
        out = results_everywhere(store, sample)
    finally:
        store.close()
    assert out["online"] == out["closure"]
    assert out["sql"] == out["closure"]
    assert out["backtest"] == out["closure"]
    # Lookups are never NULL: a predicate of lookups alone is TRUE or FALSE, whatever is NULL.
    assert all(row[0] is not None and row[3] is not None for row in out["closure"])


def fill_without_double_removal(store: OpsStore, labels: list[Any], items: list[Any]) -> None:
    """Apply the generated history in time order, skipping removals of what is not active."""
    steps: list[tuple[datetime, int, Any]] = []
    for order, (entity, name, created, removed, expires) in enumerate(labels):
        at = T0 + timedelta(hours=created)
        steps.append((at, order, ("label+", entity, name, at, expires)))
        if removed:
            steps.append((at + timedelta(hours=removed), order, ("label-", entity, name)))
    for order, (list_name, value, created, removed) in enumerate(items):
        at = T0 + timedelta(hours=created)
        steps.append((at, 100 + order, ("item+", list_name, value)))
        if removed:
            steps.append((at + timedelta(hours=removed), 100 + order, ("item-", list_name, value)))
    for list_name in ("blocked_ips", "allowed"):
        store.create_list(list_name, kind="ip", description="", author="a", at=T0)
    for at, _, step in sorted(steps, key=lambda s: (s[0], s[1])):
        kind = step[0]
        if kind == "label+":
            (entity_type, key), name, created_at, expires = step[1], step[2], step[3], step[4]
            expires_at = created_at + timedelta(hours=expires) if expires else None
            store.add_label(
                entity_type, key, name, reason="r", source="api", author="a", at=at,
                expires_at=expires_at,
            )  # fmt: skip
        elif kind == "label-":
            (entity_type, key), name = step[1], step[2]
            if any(x.removed is None and x.label == name for x in store.labels(entity_type, key)):
                store.remove_label(entity_type, key, name, author="a", reason="r", at=at)
        elif kind == "item+":
            store.add_item(step[1], step[2], author="a", reason="r", at=at)
        elif any(x.removed is None and x.value == step[2] for x in store.items(step[1])):
            store.remove_item(step[1], step[2], author="a", reason="r", at=at)


# -- point in time --------------------------------------------------------------------------------
def test_a_label_added_after_an_event_is_not_seen_by_it_in_sql() -> None:
    store = SqlOpsStore("sqlite://")
    event_time = T0 + timedelta(hours=1)
    store.add_label("device", "D1", "mule", reason="r", source="api", author="a", at=T0)
    store.add_label(
        "device", "D2", "mule", reason="r", source="api", author="a", at=event_time + timedelta(1)
    )
    checked = check("has_label(device, 'mule')")
    con = duckdb.connect()
    register_history(con, store.labels(), store.items())
    sample = [
        {"device_id": "D1", "decided_at": event_time},
        {"device_id": "D2", "decided_at": event_time},  # labelled a day later
        {"device_id": "D2", "decided_at": event_time + timedelta(days=2)},
    ]
    con.register("events", arrow_table(sample, checked.types))
    answers = [r[0] for r in con.sql(select_sql([("r", checked)], "events")).fetchall()]
    assert answers == [True, False, True]
    store.close()


def test_backtest_over_the_source_layer_sees_labels_as_of_each_decision(
    settings: Settings,
) -> None:
    """End to end: decisions taken before and after a label, then the backtest SQL over the
    stored events (``decided_at`` from DECIDED_AT_SQL) agrees with what was decided online."""
    service = open_service(settings)
    assert service.ops is not None
    labels = LabelService(service.ops, service.engine.lookups, ["device", "customer"])
    before = service.handle_sync([transaction("e1", device_id="D1")], "decide")[0]
    labels.add("device", "D1", NewLabel("mule", "case 7", "ana"))
    after = service.handle_sync([transaction("e2", device_id="D1")], "decide")[0]
    imported = transaction("e3", device_id="D1", occurred_at="2020-01-01T00:00:00+00:00")
    service.handle_sync([imported], "ingest")
    history = (service.ops.labels(), service.ops.items())
    service.close()

    path = settings.source_path()
    assert path is not None
    con = duckdb.connect(str(path), read_only=True)
    register_history(con, *history)
    checked = compiler().check("has_label(device, 'mule')", Source("rule r"))
    con.execute(
        f"""CREATE TEMP TABLE rows AS SELECT e.event_id,
        json_extract_string(e.payload, '$.device_id') AS device_id,
        {DECIDED_AT_SQL} AS decided_at FROM events e ORDER BY e.seq"""
    )
    answers = con.sql(f"SELECT event_id, {predicate_sql(checked)} FROM rows").fetchall()
    assert answers == [("e1", False), ("e2", True), ("e3", False)]
    decided = dict(con.sql("SELECT event_id, epoch_us(decided_at) FROM rows").fetchall())
    assert decided["e2"] == to_us(datetime.fromisoformat(after["decided_at"]))
    assert decided["e3"] == to_us(datetime(2020, 1, 1, tzinfo=UTC))  # imported: its event time
    assert before["decision_id"] != after["decision_id"]
    con.close()
