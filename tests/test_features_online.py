"""The online engine on its own: exact sums, bounded state, idle expiry, late events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from decisionloop.domain.events import Event
from decisionloop.errors import DefinitionError
from decisionloop.features.online import EVICT_BATCH, OnlineFeatures, compile_features
from decisionloop.project.definitions import FeatureSpec, FieldSpec

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
KEYS = {"customer": "customer_id"}


class _Type:
    def __init__(self, **fields: str) -> None:
        self.fields = {name: FieldSpec(type=kind) for name, kind in fields.items()}  # type: ignore[arg-type]


TYPES = {"txn": _Type(customer_id="string", amount="number", qty="integer", channel="enum")}


def spec(name: str, aggregation: str, windows: list[str], **extra: Any) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        entity="customer",
        aggregation=aggregation,  # type: ignore[arg-type]
        windows=windows,
        event_types=["txn"],
        **extra,
    )


def features(*specs: FeatureSpec, lateness: str = "5m") -> OnlineFeatures:
    no_filters: dict[str, Callable[[Event], bool]] = {}
    return compile_features(specs, KEYS, no_filters, event_types=TYPES, allowed_lateness=lateness)


def txn(i: int, at: datetime, customer: str = "C1", **values: Any) -> Event:
    return Event(f"e{i}", "txn", at, {"customer_id": customer, **values}, {})


def test_number_sums_are_exact_and_integer_sums_stay_integers() -> None:
    online = features(
        spec("amount_sum", "sum", ["1h"], field="amount"),
        spec("amount_avg", "avg", ["1h"], field="amount"),
        spec("qty_sum", "sum", ["1h"], field="qty"),
        spec("qty_avg", "avg", ["1h"], field="qty"),
    )
    seen = {}
    for i, (amount, qty) in enumerate([(0.1, 2), (0.2, None), (0.3, 5)]):
        seen = online.observe(txn(i, T0 + timedelta(seconds=i), amount=amount, qty=qty))
    assert seen["customer.amount_sum_1h"] == 0.6  # not 0.6000000000000001
    assert seen["customer.amount_avg_1h"] == 0.2
    assert seen["customer.qty_sum_1h"] == 7
    assert type(seen["customer.qty_sum_1h"]) is int
    assert seen["customer.qty_avg_1h"] == 3.5


def test_sum_of_a_text_field_is_refused() -> None:
    with pytest.raises(DefinitionError, match="needs a number or integer field"):
        features(spec("bad", "sum", ["1h"], field="channel"))


def test_horizon_includes_the_allowed_lateness() -> None:
    online = features(spec("n", "count", ["10m", "1h"]), lateness="5m")
    assert [f.horizon for f in online.features] == [3600 + 300]


def test_state_is_bounded_by_the_longest_window_plus_lateness() -> None:
    online = features(spec("n", "count", ["10m"]), lateness="1m")
    for i in range(7200):
        online.observe(txn(i, T0 + timedelta(seconds=i)))
    history = online.features[0].state["C1"]
    assert 11 * 60 <= len(history.times) <= 11 * 60 + EVICT_BATCH  # dropped in batches
    times, _, _ = online.snapshot()["n"]["C1"]
    assert len(times) == 11 * 60  # (10m + 1m) of one event per second


def test_idle_entities_are_forgotten() -> None:
    online = features(spec("n", "count", ["10m"]), lateness="0s")
    for i in range(1000):
        online.observe(txn(i, T0, customer=f"C{i}"))
    assert online.entities() == 1000
    online.observe(txn(1000, T0 + timedelta(minutes=30), customer="other"))
    assert online.entities() == 1


def test_a_read_only_observation_changes_nothing() -> None:
    online = features(spec("n", "count", ["10m"]))
    online.observe(txn(0, T0))
    before, watermark = online.snapshot(), online.watermark
    seen = online.observe(txn(1, T0 + timedelta(hours=5)), update=False)
    assert seen == {"customer.n_10m": 0}
    assert (online.snapshot(), online.watermark) == (before, watermark)


def replay(events: list[Event], online: OnlineFeatures) -> None:
    """What ``DecisionService.start`` does: the look-back, in event-time then ingestion order."""
    latest = max(e.occurred_at for e in events)
    horizon = timedelta(seconds=max(f.horizon for f in online.features))
    ordered = sorted(enumerate(events), key=lambda p: (p[1].occurred_at, p[0]))
    for _, event in ordered:
        if event.occurred_at >= latest - horizon:
            online.observe(event)


def test_a_late_event_sees_the_same_values_after_a_restart() -> None:
    """Beyond the lateness, values are cut at the retention edge — deterministically, so that
    a restarted service (which never replays what is older) answers exactly the same."""
    specs = (spec("n", "count", ["1h"]), spec("amount_max", "max", ["1h"], field="amount"))
    before = [
        txn(0, T0, amount=5.0),
        txn(1, T0 + timedelta(minutes=50), amount=6.0),  # keeps C1 from the idle sweep
        txn(2, T0 + timedelta(hours=2), customer="C2", amount=1.0),
    ]
    # 90 minutes behind the watermark; C1 still holds its 12:00 event in memory
    late = txn(3, T0 + timedelta(minutes=30), amount=7.0)
    uninterrupted = features(*specs)
    for event in before:
        uninterrupted.observe(event)
    seen = uninterrupted.observe(late)
    assert uninterrupted.late_events == 1

    restarted = features(*specs)
    replay(before, restarted)
    assert restarted.snapshot() == features_snapshot(before, specs)
    assert restarted.observe(late) == seen
    # the late event itself is cut off too: retention reaches back to 12:55 only
    assert seen == {"customer.n_1h": 0, "customer.amount_max_1h": None}


def features_snapshot(events: list[Event], specs: tuple[FeatureSpec, ...]) -> Any:
    online = features(*specs)
    for event in events:
        online.observe(event)
    return online.snapshot()


def test_out_of_order_within_lateness_is_exact() -> None:
    online = features(
        spec("n", "count", ["1m"]),
        spec("amount_sum", "sum", ["1m"], field="amount"),
        spec("amount_min", "min", ["1m"], field="amount", include_current=False),
    )
    online.observe(txn(0, T0 + timedelta(seconds=50), amount=1.0))
    online.observe(txn(1, T0 + timedelta(seconds=90), amount=2.0))
    seen = online.observe(txn(2, T0 + timedelta(seconds=40), amount=4.0))  # 50 s late
    # sees only what was ingested before it and is in (t - 1m, t]: nothing but itself
    assert seen == {
        "customer.n_1m": 1,
        "customer.amount_sum_1m": 4.0,
        "customer.amount_min_1m": None,
    }
    seen = online.observe(txn(3, T0 + timedelta(seconds=95), amount=8.0))
    assert seen == {
        "customer.n_1m": 4,
        "customer.amount_sum_1m": 15.0,
        "customer.amount_min_1m": 1.0,
    }
    assert online.late_events == 0
