"""Online velocity features: per-entity windows read and updated for every live event.

Each feature definition expands over its windows into names ``<entity>.<name>_<window>``
(``customer.txn_count_1h``). State per (definition, entity id) is a time-sorted list of
``(epoch_seconds, value)`` trimmed to the longest window; a read bisects the window's start.
The state is a cache: the service rebuilds it by replaying the source layer's look-back on start.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from decisionloop.domain.events import Event
from decisionloop.project.definitions import FeatureSpec, window_seconds

Aggregate = Callable[[list[Any]], Any]


def _count(values: list[Any]) -> Any:
    return len(values)


def _sum(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _avg(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _min(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _max(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _distinct(values: list[Any]) -> Any:
    return len({v for v in values if v is not None})


AGGREGATES: dict[str, Aggregate] = {
    "count": _count,
    "sum": _sum,
    "avg": _avg,
    "min": _min,
    "max": _max,
    "distinct_count": _distinct,
}


def feature_names(spec: FeatureSpec) -> list[str]:
    return [f"{spec.entity}.{spec.name}_{window}" for window in spec.windows]


@dataclass
class History:
    """One entity's observations, sorted by time: parallel lists so that bisect runs in C."""

    times: list[float] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)


@dataclass
class OnlineFeature:
    """One definition, compiled: which events feed it and how its windows aggregate."""

    spec: FeatureSpec
    key_field: str
    names: list[str]
    windows: list[int]  # seconds, aligned with names
    aggregate: Aggregate
    applies: Callable[[Event], bool]
    state: dict[str, History] = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return max(self.windows)

    def read(self, entity_id: str, now: float, out: dict[str, Any]) -> None:
        history = self.state.get(entity_id)
        if history is None:
            for name in self.names:
                out[name] = self.aggregate([])
            return
        times = history.times
        end = bisect_right(times, now)  # up to and including the current instant
        counting = self.aggregate is _count
        for name, window in zip(self.names, self.windows, strict=True):
            # Window (now - w, now]: everything after its start.
            start = bisect_right(times, now - window, 0, end)
            out[name] = end - start if counting else self.aggregate(history.values[start:end])

    def add(self, entity_id: str, ts: float, value: Any) -> None:
        history = self.state.get(entity_id)
        if history is None:
            history = self.state[entity_id] = History()
        times = history.times
        if times and ts < times[-1]:
            at = bisect_right(times, ts)  # after equal instants: ingestion order among ties
            times.insert(at, ts)
            history.values.insert(at, value)
        else:
            times.append(ts)
            history.values.append(value)
        cutoff = times[-1] - self.horizon
        if times[0] <= cutoff:
            drop = bisect_right(times, cutoff)
            del times[:drop]
            del history.values[:drop]


class OnlineFeatures:
    """All online features of a project: ``observe`` an event, get its feature values.

    An event *reads* every feature whose entity it carries (a transaction sees the customer's
    login count) but *feeds* only the features declared for its type and passing their filter.
    """

    def __init__(self, features: Iterable[OnlineFeature]) -> None:
        self.features = list(features)
        self._fed_by: dict[str, set[int]] = {}
        for index, feature in enumerate(self.features):
            for event_type in feature.spec.event_types:
                self._fed_by.setdefault(event_type, set()).add(index)

    @property
    def names(self) -> list[str]:
        return [name for f in self.features for name in f.names]

    def observe(self, event: Event, update: bool = True) -> dict[str, Any]:
        """Return the feature values the event sees, updating state with it when ``update``."""
        values: dict[str, Any] = {}
        ts = event.occurred_at.timestamp()
        fed = self._fed_by.get(event.type, set())
        present = event.values
        for index, feature in enumerate(self.features):
            entity_id = present.get(feature.key_field)
            if entity_id is None:
                continue
            counted = update and index in fed and feature.applies(event)
            value = event.values.get(feature.spec.field) if feature.spec.field else 1
            if counted and feature.spec.include_current:
                feature.add(entity_id, ts, value)
                feature.read(entity_id, ts, values)
            else:
                feature.read(entity_id, ts, values)
                if counted:
                    feature.add(entity_id, ts, value)
        return values

    def entities(self) -> int:
        return sum(len(f.state) for f in self.features)


def compile_features(
    specs: Iterable[FeatureSpec],
    entity_keys: Mapping[str, str],
    filters: Mapping[str, Callable[[Event], bool]],
) -> OnlineFeatures:
    compiled = []
    for spec in specs:
        compiled.append(
            OnlineFeature(
                spec=spec,
                key_field=entity_keys[spec.entity],
                names=feature_names(spec),
                windows=[window_seconds(w) for w in spec.windows],
                aggregate=AGGREGATES[spec.aggregation],
                applies=filters.get(spec.name, lambda event: True),
            )
        )
    return OnlineFeatures(compiled)
