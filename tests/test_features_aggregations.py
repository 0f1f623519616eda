"""stddev, first_seen_age and time_since_last in the online engine, against their definitions
(the offline engine is held to the same values by tests/test_features_parity.py)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest

from decisionloop.domain.events import Event
from decisionloop.errors import DefinitionError
from decisionloop.features.online import OnlineFeatures, compile_features
from decisionloop.features.semantics import wide_float
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


def features(
    *specs: FeatureSpec, filters: dict[str, Callable[[Event], bool]] | None = None
) -> OnlineFeatures:
    return compile_features(specs, KEYS, filters or {}, event_types=TYPES, allowed_lateness="5m")


def txn(i: int, seconds: float, customer: str = "C1", **values: Any) -> Event:
    at = T0 + timedelta(seconds=seconds)
    return Event(f"e{i}", "txn", at, {"customer_id": customer, **values}, {})


def test_stddev_is_the_sample_standard_deviation_and_null_below_two_values() -> None:
    online = features(
        spec("amount_sd", "stddev", ["1h"], field="amount"),
        spec("qty_sd", "stddev", ["1h"], field="qty"),
    )
    first = online.observe(txn(0, 0, amount=10.0, qty=None))
    assert first["customer.amount_sd_1h"] is None  # one value
    assert first["customer.qty_sd_1h"] is None  # no value
    amounts, quantities = [10.0], []
    seen: dict[str, Any] = {}
    for i, (amount, qty) in enumerate([(12.5, 3), (None, 4), (7.25, 10), (10.0, -2)], start=1):
        seen = online.observe(txn(i, i, amount=amount, qty=qty))
        amounts += [amount] if amount is not None else []
        quantities.append(qty)
    assert seen["customer.amount_sd_1h"] == pytest.approx(statistics.stdev(amounts), rel=1e-15)
    assert seen["customer.qty_sd_1h"] == pytest.approx(statistics.stdev(quantities), rel=1e-15)


def test_stddev_is_exact_for_a_large_mean_and_equal_values_give_zero() -> None:
    """Two-pass or naive float formulas lose every digit here (mean 1e9, spread 1e-6)."""
    online = features(spec("amount_sd", "stddev", ["1h"], field="amount"))
    amounts = [1e9 + d for d in (0.000001, 0.000002, 0.000004, 0.000003)]
    seen: dict[str, Any] = {}
    for i, amount in enumerate(amounts):
        seen = online.observe(txn(i, i, amount=amount))
    units = [Fraction(math.floor(a * 1e6 + 0.5)) for a in amounts]
    exact = math.sqrt(statistics.variance(units)) / 1e6
    assert seen["customer.amount_sd_1h"] == pytest.approx(exact, rel=1e-12)
    assert seen["customer.amount_sd_1h"] == pytest.approx(1.2909944487358056e-06, rel=1e-9)
    same = features(spec("amount_sd", "stddev", ["1h"], field="amount"))
    for i in range(3):
        seen = same.observe(txn(i, i, amount=123.456789))
    assert seen["customer.amount_sd_1h"] == 0.0


def test_wide_float_is_exact_below_2_53_and_close_beyond() -> None:
    assert wide_float(2**53 - 1) == float(2**53 - 1)
    assert wide_float(2**62 + 1) == float(2**62)
    big = 3 * 10**36 + 12345
    assert wide_float(big) == pytest.approx(float(big), rel=1e-15)


def test_stddev_of_a_text_field_is_refused() -> None:
    with pytest.raises(DefinitionError, match="stddev needs a number or integer field"):
        features(spec("bad", "stddev", ["1h"], field="channel"))


def test_first_seen_age_is_the_age_of_the_earliest_event_in_the_window() -> None:
    online = features(
        spec("seen", "first_seen_age", ["1m", "1h"]),
        spec("seen_before", "first_seen_age", ["1h"], include_current=False),
    )
    first = online.observe(txn(0, 0))
    assert first["customer.seen_1m"] == 0.0  # the current event is the first
    assert first["customer.seen_before_1h"] is None  # nothing before it
    seen = online.observe(txn(1, 90.5))
    assert seen["customer.seen_1m"] == 0.0  # the first event left the minute
    assert seen["customer.seen_1h"] == 90.5
    assert seen["customer.seen_before_1h"] == 90.5
    other = online.observe(txn(2, 91, customer="C2"))
    assert other["customer.seen_1h"] == 0.0


def test_time_since_last_measures_from_the_previous_event_whatever_include_current() -> None:
    online = features(
        spec("since", "time_since_last", ["1m", "1h"]),
        spec("since_excl", "time_since_last", ["1h"], include_current=False),
    )
    first = online.observe(txn(0, 0))
    assert first["customer.since_1h"] is None
    assert first["customer.since_excl_1h"] is None
    seen = online.observe(txn(1, 30))
    assert seen["customer.since_1h"] == seen["customer.since_excl_1h"] == 30.0
    seen = online.observe(txn(2, 130.25))
    assert seen["customer.since_1m"] is None  # the previous event is outside the minute
    assert seen["customer.since_1h"] == 100.25
    tie = online.observe(txn(3, 130.25))
    assert tie["customer.since_1h"] == 0.0
    late = online.observe(txn(4, 100))  # out of order: its previous event is the one at 30 s
    assert late["customer.since_1h"] == 70.0


def test_ages_follow_the_filter() -> None:
    only_a: dict[str, Callable[[Event], bool]] = {
        name: (lambda event: event.values.get("channel") == "a") for name in ("a_seen", "a_since")
    }
    online = features(
        spec("a_seen", "first_seen_age", ["1h"], filter="channel = 'a'"),
        spec("a_since", "time_since_last", ["1h"], filter="channel = 'a'"),
        filters=only_a,
    )
    online.observe(txn(0, 0, channel="b"))
    online.observe(txn(1, 10, channel="a"))
    online.observe(txn(2, 20, channel="a"))
    seen = online.observe(txn(3, 50, channel="b"))
    assert seen["customer.a_seen_1h"] == 40.0  # from the first 'a', not the first event
    assert seen["customer.a_since_1h"] == 30.0  # from the last 'a'
    assert online.observe(txn(4, 55, channel="a"))["customer.a_since_1h"] == 35.0
