"""Link features: ``labelled_neighbours``, the neighbours of an entity that carry a risk label.

``device.mule_accounts_7d`` — the number of distinct accounts seen with this device in the last
seven days that carry the risk label ``mule`` at the event's time::

    - name: mule_accounts
      entity: device
      aggregation: labelled_neighbours
      field: account_id        # the neighbour's key, carried by the events
      neighbour: account       # the entity type the ids are labelled under in the ops store
      label: mule
      windows: [7d]
      event_types: [transaction]

The neighbours of a window are exactly what ``distinct_count`` of the same field counts (the
online state is the same value column, cursor included); the label is read from the ops store's
history, *in force at the event's time* (``semantics``). Online, :func:`neighbour_counter` asks the
engine's :class:`~decisionloop.ops.index.LookupIndex` per distinct neighbour; offline,
:func:`neighbour_ctes` joins the window's rows with the label history table that the rules'
``has_label`` reads (:data:`~decisionloop.ops.lookups.LABEL_HISTORY`), with the same interval
condition.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import polars as pl

from decisionloop.errors import InputError, Problem
from decisionloop.ops.lookups import LABEL_HISTORY
from decisionloop.project.definitions import NEIGHBOURS, FeatureSpec

if TYPE_CHECKING:
    from decisionloop.ops.store import Label

__all__ = [
    "LabelLookup",
    "NoLabels",
    "link_problems",
    "neighbour_counter",
    "neighbour_ctes",
    "with_label_history",
]

# Counts the labelled ids among a window's distinct neighbour ids, as of an instant.
Counter = Callable[[Collection[Any], datetime], int]


class LabelLookup(Protocol):
    """What the online engine reads: ``LookupIndex.has_label`` (point in time, never NULL)."""

    def has_label(
        self, entity_type: str, entity_id: str | None, label: str, at: datetime | None
    ) -> bool: ...


class NoLabels:
    """The lookup of an engine compiled without an index: no label exists (as offline without a
    label history of the ops store)."""

    def has_label(
        self, entity_type: str, entity_id: str | None, label: str, at: datetime | None
    ) -> bool:
        return False


def link_problems(spec: FeatureSpec, entity_keys: Mapping[str, str]) -> list[tuple[str, str]]:
    """(key of the definition, reason) for each problem of a ``labelled_neighbours`` definition:
    the neighbour must be a declared entity and ``field`` its key (an entity key of the event,
    so that the ids are the ones labels are attached to)."""
    if spec.aggregation != NEIGHBOURS or spec.neighbour is None:
        return []
    if spec.neighbour not in entity_keys:
        return [("neighbour", f"unknown neighbour entity {spec.neighbour!r}")]
    key = entity_keys[spec.neighbour]
    if spec.field is not None and spec.field != key:
        owner = next((e for e, k in entity_keys.items() if k == spec.field), None)
        what = f"the key of entity {owner!r}" if owner else "not an entity key"
        return [("field", f"{spec.field!r} is {what}; neighbour {spec.neighbour!r} needs {key!r}")]
    return []


def neighbour_counter(lookup: LabelLookup, entity_type: str, label: str) -> Counter:
    """The online count: how many of ``ids`` carry ``label`` in force at ``at``."""
    has_label = lookup.has_label

    def count(ids: Collection[Any], at: datetime) -> int:
        n = 0
        for entity_id in ids:
            if has_label(entity_type, entity_id, label, at):
                n += 1
        return n

    return count


def neighbour_ctes(
    j: int,
    stream: int,
    key: str,
    value: str,
    entity_type: str,
    label: str,
    columns: list[tuple[int, bool]],
    epoch_us: Callable[[str], str],
) -> list[tuple[str, str, bool]]:
    """The CTEs ``_nb<j>`` (per reading row ``_seq``: one count ``_n<c>`` per (window, include)
    in ``columns``) over the windowed rows ``win`` of one stream: its fed rows whose neighbour
    ``value`` ever carried the label (few: a join with the label's history), then per reading row
    those in its window — ``seq_x < seq_e`` (``<=``: itself, when included), ``t_e - w < t_x <=
    t_e`` — whose label interval covers ``t_e``, distinct ids counted once. ``key``/``value`` are
    quoted columns; ``epoch_us`` the dialect's conversion to microseconds."""
    history = (
        f"SELECT dl_entity_id AS _id, {epoch_us('dl_created_at')} AS _c, "
        f"{epoch_us('dl_removed_at')} AS _r, {epoch_us('dl_expires_at')} AS _e "
        f"FROM {LABEL_HISTORY} WHERE dl_entity_type = {_string(entity_type)} "
        f"AND dl_label = {_string(label)}"
    )
    rows = (
        f"SELECT b._seq AS _xs, b._t AS _xt, b.{key} AS _k, b.{value} AS _v, l._c, l._r, l._e "
        f"FROM win b JOIN _nbl{j} l ON l._id = b.{value} "
        f"WHERE b._fed{stream} AND b.{key} IS NOT NULL"
    )
    in_force = "x._c <= e._t AND (x._r IS NULL OR x._r > e._t) AND (x._e IS NULL OR x._e > e._t)"
    counts = ", ".join(
        f"count(DISTINCT CASE WHEN x._xt > e._t - {window} AND "
        f"x._xs {'<=' if include else '<'} e._seq AND {in_force} THEN x._v END) AS _n{c}"
        for c, (window, include) in enumerate(columns)
    )
    longest = max(window for window, _ in columns)
    per_row = (
        f"SELECT e._seq, {counts} FROM win e JOIN _nbx{j} x ON x._k = e.{key} "
        f"AND x._xt <= e._t AND x._xt > e._t - {longest} AND x._xs <= e._seq GROUP BY e._seq"
    )
    return [(f"_nbl{j}", history, False), (f"_nbx{j}", rows, False), (f"_nb{j}", per_row, True)]


def with_label_history(
    connection: duckdb.DuckDBPyConnection, sql: str, labels: Sequence[Label] | None
) -> pl.DataFrame:
    """Run an offline query that reads the label history: ``labels`` registered for the call,
    or the table the caller registered (``ops.history.register_history``, as a backtest does)."""
    if labels is None:
        try:
            connection.execute(f"SELECT 1 FROM {LABEL_HISTORY} LIMIT 0")
        except duckdb.CatalogException as exc:
            reason = (
                "labelled_neighbours reads the ops store's label history: pass `labels` or "
                "register it on the connection (ops.history.register_history)"
            )
            raise InputError("no label history", [Problem("labels", reason)]) from exc
        frame: pl.DataFrame = connection.sql(sql).pl()
        return frame
    from decisionloop.ops.history import label_table  # the store's schema (SQLAlchemy) on demand

    connection.register(LABEL_HISTORY, label_table(labels))
    try:
        frame = connection.sql(sql).pl()
    finally:
        connection.unregister(LABEL_HISTORY)
    return frame


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
