"""Score and feature drift: the population stability index (PSI), week by week.

PSI compares the distribution of one variable in an *actual* sample (a week of scored events)
with a *reference* sample (the events of the model's training window):

1. **Bins from the reference.** The edges are the reference's quantiles at 1/B, 2/B ... (B-1)/B
   (``np.quantile``'s default linear interpolation between order statistics), NULLs left out,
   duplicates removed (a variable with many equal values gets fewer bins). Bin ``i`` holds the
   values ``v`` with ``edge[i-1] < v <= edge[i]``; the first bin is open below, the last above.
   With no non-NULL reference value there is one bin for every value.
2. **NULL is a bin of its own**: a missing value (NULL or NaN) counts there, so that a feature
   that stops arriving shows as drift instead of vanishing from both sides.
3. **Shares.** ``p_ref[i]`` and ``p_act[i]`` are each bin's count over the sample's *total*
   count (NULLs included). An empty bin would make the logarithm infinite, so every share below
   ``epsilon`` (default 1e-4) is raised to ``epsilon`` (no renormalisation).
4. ``PSI = sum_i (p_act[i] - p_ref[i]) * ln(p_act[i] / p_ref[i])``, over the numeric bins and
   the NULL bin; each term is >= 0, and bins empty on both sides add 0. PSI is undefined (None)
   when either sample is empty.

Levels, by the usual convention: below ``watch`` (0.1) ``ok``; from ``watch`` to ``alert``
(0.25) ``watch``; from ``alert`` on, ``alert``.

Weeks are seven-day buckets from the start of the reported period, ``[start + 7k days, start +
7(k+1) days)``, the last one cut at the period's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import polars as pl

from decisionloop.errors import InputError, Problem

__all__ = [
    "DEFAULT_BINS",
    "DRIFT_SCHEMA",
    "EPSILON",
    "DriftThresholds",
    "ReferenceBins",
    "check_binning",
    "population_stability_index",
    "weekly_psi",
    "weeks",
]

DEFAULT_BINS = 10
EPSILON = 1e-4
Level = Literal["ok", "watch", "alert"]
DRIFT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "week_start": pl.Datetime("us", "UTC"),
    "week_end": pl.Datetime("us", "UTC"),
    "variable": pl.String,
    "reference_events": pl.Int64,
    "events": pl.Int64,
    "psi": pl.Float64,
    "level": pl.String,
}


@dataclass(frozen=True)
class DriftThresholds:
    """PSI levels: ``watch`` from the first, ``alert`` from the second."""

    watch: float = 0.1
    alert: float = 0.25

    def __post_init__(self) -> None:
        problems = []
        if not (self.watch > 0 and np.isfinite(self.watch)):
            problems.append(Problem("--psi-watch", f"{self.watch} must be a positive number"))
        if not (self.alert >= self.watch and np.isfinite(self.alert)):
            problems.append(
                Problem("--psi-alert", f"{self.alert} must be at least the watch level")
            )
        if problems:
            raise InputError("bad PSI thresholds", problems)

    def level(self, psi: float | None) -> Level | None:
        if psi is None:
            return None
        if psi >= self.alert:
            return "alert"
        return "watch" if psi >= self.watch else "ok"


def check_binning(bins: int, epsilon: float) -> None:
    if bins < 2:
        raise InputError("bad bin count", [Problem("--bins", f"{bins} must be at least 2")])
    if not 0 < epsilon < 1:
        raise InputError("bad epsilon", [Problem("epsilon", f"{epsilon} must be in (0, 1)")])


def _values(values: Sequence[float | None] | np.ndarray | pl.Series) -> np.ndarray:
    """As float64, NULL as NaN."""
    if isinstance(values, pl.Series):
        return values.cast(pl.Float64).to_numpy()
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class ReferenceBins:
    """The bins of one variable, fitted on its reference sample, and the reference's shares."""

    edges: np.ndarray  # sorted distinct inner edges: len(edges) + 1 numeric bins, then NULL
    reference_counts: np.ndarray
    epsilon: float = EPSILON

    @classmethod
    def fit(
        cls,
        reference: Sequence[float | None] | np.ndarray | pl.Series,
        bins: int = DEFAULT_BINS,
        epsilon: float = EPSILON,
    ) -> ReferenceBins:
        check_binning(bins, epsilon)
        values = _values(reference)
        known = values[~np.isnan(values)]
        edges = np.zeros(0)
        if len(known):
            edges = np.unique(np.quantile(known, np.arange(1, bins) / bins))
        empty = cls(edges, np.zeros(len(edges) + 2, dtype=np.int64), epsilon)
        return cls(edges, empty.counts(values), epsilon)

    @property
    def reference_events(self) -> int:
        return int(self.reference_counts.sum())

    def counts(self, values: Sequence[float | None] | np.ndarray | pl.Series) -> np.ndarray:
        """Per bin (numeric bins, then NULL), how many of ``values`` fall in it."""
        array = _values(values)
        missing = np.isnan(array)
        # side="left": the index i with edges[i-1] < v <= edges[i], i.e. right-closed bins.
        numeric = np.searchsorted(self.edges, array[~missing], side="left")
        counts = np.bincount(numeric, minlength=len(self.edges) + 1).astype(np.int64)
        return np.append(counts, np.int64(missing.sum()))

    def psi(self, actual: Sequence[float | None] | np.ndarray | pl.Series) -> float | None:
        return _psi(self.reference_counts, self.counts(actual), self.epsilon)


def _psi(reference: np.ndarray, actual: np.ndarray, epsilon: float) -> float | None:
    if reference.sum() == 0 or actual.sum() == 0:
        return None
    expected = np.maximum(reference / reference.sum(), epsilon)
    observed = np.maximum(actual / actual.sum(), epsilon)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


def population_stability_index(
    reference: Sequence[float | None] | np.ndarray | pl.Series,
    actual: Sequence[float | None] | np.ndarray | pl.Series,
    bins: int = DEFAULT_BINS,
    epsilon: float = EPSILON,
) -> float | None:
    """PSI of ``actual`` against ``reference`` (see the module doc); None if either is empty."""
    return ReferenceBins.fit(reference, bins, epsilon).psi(actual)


def weeks(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """Seven-day buckets from ``start``, the last cut at ``end``."""
    buckets = []
    at = start
    while at < end:
        buckets.append((at, min(at + timedelta(days=7), end)))
        at += timedelta(days=7)
    return buckets


def weekly_psi(
    reference: pl.DataFrame,
    actual: pl.DataFrame,
    variables: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    bins: int = DEFAULT_BINS,
    epsilon: float = EPSILON,
    thresholds: DriftThresholds | None = None,
) -> pl.DataFrame:
    """One row per (week of ``[start, end)``, variable): the PSI of the week's values of the
    variable in ``actual`` (rows with an ``occurred_at`` column) against all of ``reference``,
    with its level (columns of :data:`DRIFT_SCHEMA`). A week without rows has no PSI."""
    limits = thresholds or DriftThresholds()
    fitted = {name: ReferenceBins.fit(reference[name], bins, epsilon) for name in variables}
    rows = []
    for week_start, week_end in weeks(start, end):
        week = actual.filter(
            (pl.col("occurred_at") >= week_start) & (pl.col("occurred_at") < week_end)
        )
        for name in variables:
            psi = fitted[name].psi(week[name])
            rows.append(
                {
                    "week_start": week_start,
                    "week_end": week_end,
                    "variable": name,
                    "reference_events": fitted[name].reference_events,
                    "events": week.height,
                    "psi": psi,
                    "level": limits.level(psi),
                }
            )
    return pl.DataFrame(rows, schema=DRIFT_SCHEMA)
