"""The in-memory index that ``has_label`` and ``in_list`` read on the hot path.

It holds the whole history of labels and list items as validity intervals ``[from, until)`` per
key, so that a lookup answers "was it in force at time t" exactly as the SQL path does over the
store's history (:mod:`decisionloop.ops.history`). Loaded from the store on start and kept current
by the API on the event loop, the thread that decides: no locks are needed.

Time: a lookup is evaluated as of the decision time (``decided_at``), the clock of the engine when
it decides; a label or item is in force when ``created_at <= t`` and ``t`` is before its removal
and its expiry.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from decisionloop.ops.store import Label, ListItem, OpsStore

Interval = tuple[datetime, datetime | None]  # [from, until); until None: open


def _covers(intervals: Iterable[Interval], at: datetime) -> bool:
    return any(start <= at and (until is None or at < until) for start, until in intervals)


class LookupIndex:
    def __init__(self) -> None:
        # (entity type, entity id) -> label name -> label id -> interval
        self._labels: dict[tuple[str, str], dict[str, dict[int, Interval]]] = {}
        # list name -> value -> item id -> interval
        self._items: dict[str, dict[str, dict[int, Interval]]] = {}

    @classmethod
    def from_store(cls, store: OpsStore) -> LookupIndex:
        index = cls()
        index.apply_labels(store.labels())
        index.apply_items(store.items())
        return index

    def apply_labels(self, labels: Iterable[Label]) -> None:
        """Record new labels or their removal (a label is keyed by its id: the latest wins)."""
        for label in labels:
            names = self._labels.setdefault((label.entity_type, label.entity_id), {})
            names.setdefault(label.label, {})[label.id] = (label.created_at, label.ends_at)

    def apply_items(self, items: Iterable[ListItem]) -> None:
        for item in items:
            until = item.removed.at if item.removed else None
            values = self._items.setdefault(item.list_name, {})
            values.setdefault(item.value, {})[item.id] = (item.created_at, until)

    def has_label(
        self, entity_type: str, entity_id: str | None, label: str, at: datetime | None
    ) -> bool:
        """Never NULL, as SQL's EXISTS: a NULL key or time matches nothing."""
        if entity_id is None or at is None:
            return False
        intervals = self._labels.get((entity_type, entity_id), {}).get(label)
        return intervals is not None and _covers(intervals.values(), at)

    def in_list(self, list_name: str, value: str | None, at: datetime | None) -> bool:
        if value is None or at is None:
            return False
        intervals = self._items.get(list_name, {}).get(value)
        return intervals is not None and _covers(intervals.values(), at)

    def labels_of(self, entity_type: str, entity_id: str, at: datetime) -> list[str]:
        """The names of the labels in force on one entity at ``at``, sorted."""
        names = self._labels.get((entity_type, entity_id), {})
        return sorted(n for n, ivs in names.items() if _covers(ivs.values(), at))
