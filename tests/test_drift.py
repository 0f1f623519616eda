"""PSI against hand computations: reference-quantile bins, right-closed, ties collapsed, NULL as a
bin of its own, epsilon for empty bins; levels; weekly buckets."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from decisionloop.errors import InputError
from decisionloop.ml.drift import (
    DriftThresholds,
    ReferenceBins,
    population_stability_index,
    weekly_psi,
    weeks,
)

EPS = 1e-4


def term(actual: float, expected: float) -> float:
    """One bin's share of the PSI, with empty shares raised to epsilon."""
    a, e = max(actual, EPS), max(expected, EPS)
    return (a - e) * math.log(a / e)


def test_bins_are_reference_quantiles_closed_on_the_right() -> None:
    reference = [float(v) for v in range(1, 11)]
    bins = ReferenceBins.fit(reference, bins=5)
    # Quantiles 0.2 .. 0.8 of 1..10, linear: position 9q between order statistics.
    assert bins.edges.tolist() == pytest.approx([2.8, 4.6, 6.4, 8.2])
    assert bins.reference_counts.tolist() == [2, 2, 2, 2, 2, 0]  # five bins of 2, no NULL
    # An edge value falls in the bin it closes; above the last edge, the last bin.
    assert bins.counts([2.8, 2.80001, 8.2, 100.0, -5.0]).tolist() == [2, 1, 0, 1, 1, 0]


def test_psi_by_hand_with_empty_bins_and_nulls() -> None:
    reference = [float(v) for v in range(1, 11)]
    actual = [1.0, 1.0, 1.0, 5.0, 9.0, 10.0, None, None]
    # Bins (.., 2.8] (2.8, 4.6] (4.6, 6.4] (6.4, 8.2] (8.2, ..) NULL; reference 0.2 each, no NULL.
    expected = (
        term(3 / 8, 0.2)  # 1, 1, 1
        + term(0, 0.2)
        + term(1 / 8, 0.2)  # 5
        + term(0, 0.2)
        + term(2 / 8, 0.2)  # 9, 10
        + term(2 / 8, 0)  # the NULLs: a bin the reference leaves empty
    )
    assert population_stability_index(reference, actual, bins=5) == pytest.approx(expected)
    as_array = np.array(actual, dtype=np.float64)  # NaN counts as NULL too
    assert population_stability_index(reference, as_array, bins=5) == pytest.approx(expected)


def test_ties_collapse_bins() -> None:
    reference = [0.0] * 8 + [5.0, 5.0]
    bins = ReferenceBins.fit(reference, bins=4)
    assert bins.edges.tolist() == [0.0]  # every quantile is 0: one edge, two bins
    assert bins.reference_counts.tolist() == [8, 2, 0]
    actual = [0.0, 5.0, 7.0, None]
    expected = term(1 / 4, 0.8) + term(2 / 4, 0.2) + term(1 / 4, 0)
    assert bins.psi(actual) == pytest.approx(expected)


def test_same_distribution_is_zero_and_empty_is_undefined() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=1000)
    assert population_stability_index(reference, reference) == 0.0
    assert population_stability_index(reference, []) is None
    assert population_stability_index([], reference) is None
    # A reference of NULLs only: one numeric bin, and the NULL bin.
    assert ReferenceBins.fit([None, None]).reference_counts.tolist() == [0, 2]
    assert population_stability_index([None, None], [None]) == 0.0


def test_a_shifted_sample_scores_more_than_a_resampled_one() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=5000)
    same = population_stability_index(reference, rng.normal(size=1000))
    shifted = population_stability_index(reference, rng.normal(loc=1.0, size=1000))
    assert same is not None
    assert shifted is not None
    assert same < 0.1 < 0.25 < shifted


def test_levels_and_their_checks() -> None:
    limits = DriftThresholds()
    assert [limits.level(v) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0, None)] == [
        "ok",
        "ok",
        "watch",
        "watch",
        "alert",
        "alert",
        None,
    ]
    assert DriftThresholds(0.2, 0.2).level(0.2) == "alert"
    with pytest.raises(InputError) as bad:
        DriftThresholds(0.3, 0.2)
    assert [p.where for p in bad.value.problems] == ["--psi-alert"]
    with pytest.raises(InputError):
        DriftThresholds(0.0, 0.2)
    with pytest.raises(InputError):
        ReferenceBins.fit([1.0], bins=1)


def test_weeks_start_at_the_period_and_the_last_is_cut() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=17)
    assert weeks(start, end) == [
        (start, start + timedelta(days=7)),
        (start + timedelta(days=7), start + timedelta(days=14)),
        (start + timedelta(days=14), end),
    ]
    assert weeks(start, start) == []


def test_weekly_psi_flags_the_drifted_week_only() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    reference_values = [float(v) for v in range(1, 11)]
    reference = pl.DataFrame({"x": reference_values})
    week = timedelta(days=7)
    # Week 1: the reference again (one value on the week's first instant); week 2: all high,
    # its first value exactly at the week boundary; week 3 (cut at day 16): nothing.
    times = [start + timedelta(hours=i) for i in range(10)] + [
        start + week + timedelta(hours=i) for i in range(10)
    ]
    values = reference_values + [9.5] * 10
    actual = pl.DataFrame(
        {"occurred_at": times, "x": values},
        schema_overrides={"occurred_at": pl.Datetime("us", "UTC")},
    )
    rows = weekly_psi(reference, actual, ["x"], start, start + timedelta(days=16), bins=5)
    assert rows["events"].to_list() == [10, 10, 0]
    assert rows["reference_events"].to_list() == [10, 10, 10]
    first, second, third = rows.iter_rows(named=True)
    assert first["psi"] == 0.0
    assert first["level"] == "ok"
    drifted = term(1.0, 0.2) + 4 * term(0.0, 0.2)  # every value in the last bin
    assert second["psi"] == pytest.approx(drifted)
    assert second["level"] == "alert"
    assert third["psi"] is None
    assert third["level"] is None
    assert third["week_end"] == start + timedelta(days=16)
