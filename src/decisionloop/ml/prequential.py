"""The prequential evaluation protocol of the fraud-detection literature.

As in *Reproducible Machine Learning for Credit Card Fraud Detection* (Le Borgne, Siblini,
Lebichot, Bontempi), a model is trained on ``train_days`` days, the next ``delay_days`` are
skipped (their labels are not known yet when the model goes live) and the following ``test_days``
are scored:

* **Known entities are removed.** An entity (a customer, a card, an account: ``--entity``) with a
  fraud in the training window is already known as compromised and is dropped from every test day;
  so is one with a fraud on a later day whose labels have arrived by the test day (test day ``d``
  knows the frauds up to day ``train_days + d - 1``: the first delay days, and with a delay
  shorter than the test window earlier test days too), as an investigator would have learnt.
* **Entity precision@K**, per test day: entities ranked by their highest score of the day, the K
  highest taken, the share of them really compromised that day (a fraud among their events of the
  day), divided by K even when fewer entities are left; entities found on an earlier test day are
  removed from later days (they were blocked). The reported figure is the mean over test days.
* **ROC AUC and average precision** over every remaining test event.

Days are UTC calendar days counted from ``train_start``. Everything here works on plain
``polars`` frames with the columns ``occurred_at`` (timestamp), ``label`` (0/1, the ground truth
as known when the evaluation runs), the entity column and, to score, a score column, so the same
functions judge a model, the rules alone and their combination.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import polars as pl
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["Metrics", "Protocol", "Split", "entity_precision_at_k", "score", "split"]

DAY = "day"


@dataclass(frozen=True)
class Protocol:
    train_start: date
    train_days: int
    delay_days: int
    test_days: int
    top_k: int = 100

    def __post_init__(self) -> None:
        for name in ("train_days", "test_days", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.delay_days < 0:
            raise ValueError("delay_days must not be negative")

    @property
    def start(self) -> datetime:
        return datetime.combine(self.train_start, datetime.min.time(), tzinfo=UTC)

    def at_day(self, day: int) -> datetime:
        return self.start + timedelta(days=day)

    @property
    def test_first_day(self) -> int:
        return self.train_days + self.delay_days

    @property
    def end(self) -> datetime:
        """The first instant after the test window."""
        return self.at_day(self.test_first_day + self.test_days)


@dataclass(frozen=True)
class Split:
    train: pl.DataFrame
    test: pl.DataFrame  # known entities removed per day; ``day`` counts from the first test day
    known_before: list[int]  # per test day: entities known as compromised and removed


@dataclass(frozen=True)
class Metrics:
    roc_auc: float | None  # None when the test events hold a single class
    average_precision: float | None
    precision_at_k: float
    precision_at_k_per_day: list[float] = field(default_factory=list)
    events: int = 0
    frauds: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "roc_auc": _round(self.roc_auc),
            "average_precision": _round(self.average_precision),
            "entity_precision_at_k": _round(self.precision_at_k),
            "entity_precision_at_k_per_day": [_round(p) for p in self.precision_at_k_per_day],
            "events": self.events,
            "frauds": self.frauds,
        }


def split(frame: pl.DataFrame, protocol: Protocol, entity: str) -> Split:
    """The training rows and the test rows the protocol scores (with their test ``day``)."""
    days = frame.with_columns(
        ((pl.col("occurred_at") - pl.lit(protocol.start)).dt.total_seconds() // 86_400)
        .cast(pl.Int64)
        .alias(DAY)
    )
    train = days.filter(pl.col(DAY).is_between(0, protocol.train_days - 1))
    known = _compromised(train, entity)
    tests: list[pl.DataFrame] = []
    removed: list[int] = []
    first = protocol.test_first_day
    for d in range(protocol.test_days):
        if d > 0:  # labels arrive ``delay_days`` late: day d learns of day train_days + d - 1
            known |= _compromised(days.filter(pl.col(DAY) == protocol.train_days + d - 1), entity)
        removed.append(len(known))
        day = days.filter(pl.col(DAY) == first + d).with_columns(pl.lit(d).alias(DAY))
        tests.append(day.filter(~pl.col(entity).is_in(sorted(known))))
    test = pl.concat(tests) if tests else days.clear()
    return Split(train.drop(DAY), test, removed)


def entity_precision_at_k(
    test: pl.DataFrame, entity: str, score_column: str, k: int
) -> tuple[float, list[float]]:
    """Mean over test days of the share of compromised entities among the day's top K."""
    detected: set[str] = set()
    per_day: list[float] = []
    for d in sorted(test[DAY].unique().to_list()):
        day = test.filter((pl.col(DAY) == d) & ~pl.col(entity).is_in(sorted(detected)))
        ranked = (
            day.group_by(entity)
            .agg(pl.col(score_column).max().alias("_score"), pl.col("label").max().alias("_fraud"))
            .sort(["_score", entity], descending=[True, False])  # ties: a stable, stated order
            .head(k)
        )
        found = ranked.filter(pl.col("_fraud") == 1)[entity].to_list()
        per_day.append(len(found) / k)
        detected.update(found)
    return (sum(per_day) / len(per_day) if per_day else 0.0), per_day


def score(test: pl.DataFrame, entity: str, score_column: str, k: int) -> Metrics:
    """ROC AUC, average precision and entity precision@K of one score column."""
    labels = test["label"].to_list()
    scores = test[score_column].fill_null(0.0).to_list()
    both_classes = len(set(labels)) == 2
    mean_pk, per_day = entity_precision_at_k(test, entity, score_column, k)
    return Metrics(
        roc_auc=float(roc_auc_score(labels, scores)) if both_classes else None,
        average_precision=float(average_precision_score(labels, scores)) if both_classes else None,
        precision_at_k=mean_pk,
        precision_at_k_per_day=per_day,
        events=len(labels),
        frauds=int(sum(labels)),
    )


def _compromised(rows: pl.DataFrame, entity: str) -> set[str]:
    frauds = rows.filter((pl.col("label") == 1) & pl.col(entity).is_not_null())
    return set(frauds[entity].cast(pl.String).to_list())


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
