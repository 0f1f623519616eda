"""Online velocity features: per-entity windows updated and read for every live event.

The values follow :mod:`decisionloop.features.semantics` exactly; the offline engine
(:mod:`decisionloop.features.offline`) computes the same values in SQL.

Layout. All definitions of one entity key fed by the same event types form a :class:`Group`. Per
entity id a group keeps one :class:`History`: the event times of the events that feed at least one
of its definitions, sorted by (event time, ingestion), and beside them *columns* — for each
filter a prefix count of the events it passes (``count``; its first and last event in a window by
bisection: ``first_seen_age``, ``time_since_last``), for each filter and field prefix sums of
quantised values, of their squares and of non-NULL values (``sum``, ``avg``, ``stddev``: a window
total is one subtraction), and the values themselves, NULL where the filter fails (``min``,
``max``, ``distinct_count``).
So one event costs one key lookup, one append and one bisection per distinct window for the whole
group, whatever the number of its definitions. ``min``/``max``/``distinct_count`` aggregate the
slice in C for small windows and keep an incremental :class:`Cursor` for large ones (a busy
merchant's day).

The hot path is one generated function per project (:mod:`.codegen`): each group's update and
reads written out straight-line. ``labelled_neighbours`` (:mod:`.links`) reads the distinct values
of a column as ``distinct_count`` does, then asks the label index about each; projects without it
get the same code as before.

Memory is bounded by the watermark (see the semantics): adding to a history drops, in batches,
what is older than ``watermark - retention``; entities idle for longer are swept out through
per-group time buckets (one list append per entity and bucket, amortised O(1)).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from heapq import heapify, heappop, heappush
from typing import Any

from decisionloop.domain.events import Event
from decisionloop.features.codegen import generate
from decisionloop.features.derived import DerivedFeature, Evaluation, evaluate, evaluations
from decisionloop.features.links import Counter, LabelLookup, NoLabels, neighbour_counter
from decisionloop.features.semantics import (
    DEFAULT_ALLOWED_LATENESS,
    US,
    Definition,
    HasFields,
    ValueKind,
    feature_names,
    labelled_target,
    lateness_us,
    resolve,
)
from decisionloop.project.definitions import LABELLED, FeatureSpec

__all__ = [
    "Group",
    "History",
    "OnlineFeature",
    "OnlineFeatures",
    "compile_features",
    "epoch_us",
    "feature_names",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
COUNT, SUM, AVG, MIN, MAX, DISTINCT, STDDEV, FIRST_SEEN, SINCE_LAST = range(9)
LABELLED_COUNT, LABELLED_SHARE, NEIGHBOURS = 9, 10, 11
CODES = {
    "count": COUNT,
    "sum": SUM,
    "avg": AVG,
    "min": MIN,
    "max": MAX,
    "distinct_count": DISTINCT,
    "stddev": STDDEV,
    "first_seen_age": FIRST_SEEN,
    "time_since_last": SINCE_LAST,
    "labelled_count": LABELLED_COUNT,
    "labelled_share": LABELLED_SHARE,
    "labelled_neighbours": NEIGHBOURS,
}
# A window holding more values than this gets an incremental cursor for min/max/distinct_count;
# below it, aggregating the slice in C is faster and needs no memory.
CURSOR_MIN = 32
# Evicted events are dropped in batches: one memmove per batch, not per event.
EVICT_BATCH = 64


def epoch_us(instant: datetime) -> int:
    """Exact microseconds since the epoch (a float timestamp would round window edges)."""
    return (instant - _EPOCH) // _ONE_US


class _Reversed:
    """Orders a value the other way round: the max-heap entry of a non-number."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)


class Cursor:
    """The multiset of non-NULL values in ``column[lo:hi]`` of one history, kept as the window
    slides: ``counts`` (distinct_count) and two lazy-deletion heaps (min, max; a heap entry whose
    value is no longer counted is dropped when it reaches the top). Moving the cursor costs the
    events that enter and leave the window, not its size."""

    __slots__ = ("counts", "heaps", "hi", "high", "lo", "low", "numeric")

    def __init__(self, heaps: bool) -> None:
        self.lo = 0
        self.hi = 0
        self.counts: dict[Any, int] = {}
        self.heaps = heaps  # min/max are read (distinct_count alone needs only counts)
        self.numeric: bool | None = None  # max-heap entries: -v for numbers, else _Reversed(v)
        self.low: list[Any] = []
        self.high: list[Any] = []

    def add(self, values: list[Any], start: int, stop: int) -> None:
        counts = self.counts
        heaps = self.heaps
        for value in values[start:stop]:
            if value is None:
                continue
            counts[value] = counts.get(value, 0) + 1
            if heaps:
                numeric = self.numeric
                if numeric is None:
                    numeric = self.numeric = isinstance(value, int | float) and not isinstance(
                        value, bool
                    )
                heappush(self.low, value)
                heappush(self.high, -value if numeric else _Reversed(value))
        if heaps and len(self.low) > 2 * len(counts) + 64:  # too many stale entries: rebuild
            self.low = list(counts)
            heapify(self.low)
            self.high = [-v if self.numeric else _Reversed(v) for v in counts]
            heapify(self.high)

    def remove(self, values: list[Any], start: int, stop: int) -> None:
        counts = self.counts
        for value in values[start:stop]:
            if value is not None:
                left = counts[value] - 1
                if left:
                    counts[value] = left
                else:
                    del counts[value]

    def move(self, values: list[Any], start: int, stop: int) -> None:
        """Hold ``values[start:stop]``."""
        lo, hi = self.lo, self.hi
        if lo == start and hi == stop:
            return
        if start >= hi or stop <= lo or start >= stop:  # disjoint: start over
            self.counts.clear()
            self.low.clear()
            self.high.clear()
            self.add(values, start, stop)
        else:
            if stop > hi:
                self.add(values, hi, stop)
            elif stop < hi:
                self.remove(values, stop, hi)
            if start < lo:
                self.add(values, start, lo)
            elif start > lo:
                self.remove(values, lo, start)
        self.lo, self.hi = start, stop

    def minimum(self) -> Any:
        low, counts = self.low, self.counts
        while low and low[0] not in counts:
            heappop(low)
        return low[0] if low else None

    def maximum(self) -> Any:
        high, counts = self.high, self.counts
        if self.numeric:
            while high and -high[0] not in counts:
                heappop(high)
            return -high[0] if high else None
        while high and high[0].value not in counts:
            heappop(high)
        return high[0].value if high else None


class History:
    """One entity's events in one group, sorted by (event time, ingestion), with the group's
    columns beside the times: ``prefixes`` (one longer than ``times``: ``p[i]`` sums the first
    ``i`` entries) and ``columns`` (values, NULL where the definition's filter fails). Events at
    or before the retention cutoff are dropped in batches; reads never look below the cutoff."""

    __slots__ = ("bucket", "columns", "cursors", "prefixes", "times")

    def __init__(self, prefixes: int, columns: int) -> None:
        self.times: list[int] = []
        self.prefixes: list[list[int]] = [[0] for _ in range(prefixes)]
        self.columns: list[list[Any]] = [[] for _ in range(columns)]
        self.bucket = -1  # idle-sweep bucket of the latest time
        self.cursors: dict[tuple[int, int, bool], Cursor] | None = None  # column, window, excl.

    def held(self, start: int = 0) -> tuple[list[int], list[list[Any]], list[list[int]]]:
        """The events from ``start`` on: times, columns and prefix *increments* (prefix sums
        themselves depend on what was evicted before, the events held do not)."""
        increments = [
            [b - a for a, b in zip(p[start:-1], p[start + 1 :], strict=True)] for p in self.prefixes
        ]
        return self.times[start:], [c[start:] for c in self.columns], increments

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return self.held() == other.held()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"History{self.held()!r}"

    def insert(self, ts: int, increments: Sequence[int], values: Sequence[Any]) -> None:
        """Add an event at its place in time order (after equal instants: ingestion order)."""
        times = self.times
        if not times or ts >= times[-1]:
            times.append(ts)
            for prefix, amount in zip(self.prefixes, increments, strict=True):
                prefix.append(prefix[-1] + amount)
            for column, value in zip(self.columns, values, strict=True):
                column.append(value)
            return
        at = bisect_right(times, ts)
        times.insert(at, ts)
        for prefix, amount in zip(self.prefixes, increments, strict=True):
            prefix.insert(at + 1, prefix[at] + amount)
            for i in range(at + 2, len(prefix)):
                prefix[i] += amount
        for column, value in zip(self.columns, values, strict=True):
            column.insert(at, value)
        for (index, _, _), cursor in (self.cursors or {}).items():
            if at < cursor.lo:
                cursor.lo += 1
                cursor.hi += 1
            elif at < cursor.hi:
                cursor.hi += 1
                cursor.add(self.columns[index], at, at + 1)

    def evict(self, cutoff: int) -> None:
        """Drop the events at or before ``cutoff`` (no window of an in-time event reaches them),
        once they are a batch or an eighth of the history."""
        times = self.times
        if not times or times[0] > cutoff:
            return
        drop = bisect_right(times, cutoff)
        if drop < EVICT_BATCH and drop * 8 < len(times):
            return
        del times[:drop]
        for (index, _, _), cursor in (self.cursors or {}).items():
            if cursor.lo < drop:
                cursor.remove(self.columns[index], cursor.lo, min(cursor.hi, drop))
            cursor.lo = max(cursor.lo, drop) - drop
            cursor.hi = max(cursor.hi, drop) - drop
        for column in self.columns:
            del column[:drop]
        for prefix in self.prefixes:
            del prefix[:drop]  # the first prefix left is the base of the differences


@dataclass(frozen=True)
class Output:
    """One feature name read from a group: its aggregation and where its inputs live."""

    name: str
    code: int
    window: int  # index into Group.windows
    include_current: bool
    fed: int  # prefix counting the events the filter passes; -1: every event of the group
    units: int = -1  # prefix of quantised values (sum, avg, stddev)
    present: int = -1  # prefix of non-NULL values (sum, avg, stddev)
    squares: int = -1  # prefix of squared quantised values (stddev)
    column: int = -1  # values column (min, max, distinct_count)
    integer: bool = False  # sum/avg of an integer field: integer arithmetic
    labelled: int = -1  # prefix counting the labelled events (labelled_count, labelled_share)
    # label_delay: the window index of the delay, whose start ends the window; ``window`` is then
    # the index of window + delay (the events in (t - delay - window, t - delay]).
    near: int = -1
    counter: int = -1  # index into Group.counters (labelled_neighbours)


@dataclass
class Group:
    """The definitions of one entity key fed by the same event types, and their state."""

    key_field: str
    event_types: frozenset[str]
    retention: int = 0  # microseconds: longest window + allowed lateness
    bucket_us: int = US
    windows: list[int] = field(default_factory=list)  # distinct, microseconds
    # One filter per distinct filter text (None: every event of the types), and its closure.
    filters: list[tuple[str | None, Callable[[Event], bool]]] = field(default_factory=list)
    # Field values as the definitions read them: (field, kind), normalised once per event.
    slots: list[tuple[str, ValueKind]] = field(default_factory=list)
    # Prefixes: ("fed", filter) | ("units" | "squares" | "present", filter, slot).
    prefixes: list[tuple[Any, ...]] = field(default_factory=list)
    # Value columns: (filter, slot); heaps: whether min/max read it.
    columns: list[tuple[int, int]] = field(default_factory=list)
    heaps: list[bool] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    state: dict[str, History] = field(default_factory=dict)
    idle: dict[int, list[str]] = field(default_factory=dict)  # bucket -> entities updated then
    # Label-aware groups (their own groups: other groups' hot path is unchanged) keep the event
    # ids in a last column, where each id went (entity id, event time), and labels that arrived
    # before their event (id -> label names, watermark at arrival).
    labelled: bool = False
    ids: dict[str, tuple[str, int]] = field(default_factory=dict)
    pending: dict[str, tuple[set[str], int]] = field(default_factory=dict)
    # labelled_neighbours: per (neighbour entity, label) a counter reading the ops store's labels.
    counters: list[Counter] = field(default_factory=list)
    counted: list[tuple[str, str]] = field(default_factory=list)

    # -- planning -------------------------------------------------------------------------------
    def _index(self, items: list[Any], item: Any) -> int:
        if item not in items:
            items.append(item)
        return items.index(item)

    def attach(
        self,
        definition: Definition,
        applies: Callable[[Event], bool],
        lateness: int,
        lookup: LabelLookup | None = None,
    ) -> None:
        spec = definition.spec
        code = CODES[spec.aggregation]
        texts = [text for text, _ in self.filters]
        if spec.filter not in texts:
            self.filters.append((spec.filter, applies))
            texts.append(spec.filter)
        f = texts.index(spec.filter)
        fed = -1 if spec.filter is None else self._index(self.prefixes, ("fed", f))
        self.retention = max(self.retention, definition.longest_us + lateness)
        self.bucket_us = max(US, self.retention // 4)
        for name, width in zip(definition.names, definition.windows_us, strict=True):
            w = self._index(self.windows, width)
            # time_since_last never counts the current event (it would always give 0).
            include = spec.include_current and code != SINCE_LAST
            if code in (COUNT, FIRST_SEEN, SINCE_LAST):
                self.outputs.append(Output(name, code, w, include, fed))
                continue
            if code in (LABELLED_COUNT, LABELLED_SHARE):
                labelled = self._index(self.prefixes, ("labelled", f, spec.label))
                near = -1
                if definition.delay_us:
                    w = self._index(self.windows, width + definition.delay_us)
                    near = self._index(self.windows, definition.delay_us)
                self.outputs.append(
                    Output(name, code, w, include, fed, labelled=labelled, near=near)
                )
                continue
            assert spec.field is not None  # resolve() refuses value aggregations without one
            slot = self._index(self.slots, (spec.field, definition.kind))
            if code in (SUM, AVG, STDDEV):
                units = self._index(self.prefixes, ("units", f, slot))
                present = self._index(self.prefixes, ("present", f, slot))
                squares = -1 if code != STDDEV else self._index(self.prefixes, ("squares", f, slot))
                integer = definition.kind == "integer"
                self.outputs.append(
                    Output(name, code, w, include, fed, units, present, squares, integer=integer)
                )
            else:
                column = self._index(self.columns, (f, slot))
                if column == len(self.heaps):
                    self.heaps.append(False)
                self.heaps[column] |= code in (MIN, MAX)
                counter = -1
                if code == NEIGHBOURS:  # the distinct values, then their labels at t_e
                    assert spec.neighbour is not None  # FeatureSpec requires both
                    assert spec.label is not None
                    counter = self._index(self.counted, (spec.neighbour, spec.label))
                    if counter == len(self.counters):
                        found = lookup if lookup is not None else NoLabels()
                        self.counters.append(neighbour_counter(found, *self.counted[counter]))
                self.outputs.append(
                    Output(name, code, w, include, fed, column=column, counter=counter)
                )

    # -- values ---------------------------------------------------------------------------------
    def values_read(
        self,
        history: History,
        code: int,
        column: int,
        window: int,
        start: int,
        stop: int,
        excluding: bool,
    ) -> Any:
        """min, max or distinct_count of ``columns[column][start:stop]``: the slice for small
        windows, an incremental cursor (per column, window and exclusion) for large ones."""
        cursors = history.cursors
        key = (column, window, excluding)
        values = history.columns[column]
        if stop - start <= CURSOR_MIN and (cursors is None or key not in cursors):
            window_values = values[start:stop]
            if code == DISTINCT:
                distinct = set(window_values)
                distinct.discard(None)
                return len(distinct)
            if None in window_values:
                window_values = [v for v in window_values if v is not None]
            if not window_values:
                return None
            return min(window_values) if code == MIN else max(window_values)
        if cursors is None:
            cursors = history.cursors = {}
        cursor = cursors.get(key)
        if cursor is None:
            cursor = cursors[key] = Cursor(heaps=self.heaps[column])
        cursor.move(values, start, stop)
        if code == DISTINCT:
            return len(cursor.counts)
        return cursor.minimum() if code == MIN else cursor.maximum()

    def neighbours(
        self, history: History, column: int, window: int, start: int, stop: int, excluding: bool
    ) -> Collection[Any]:
        """The distinct non-NULL values of ``columns[column][start:stop]`` (labelled_neighbours),
        for windows too large for a slice: the cursor's counts, shared with distinct_count."""
        cursors = history.cursors
        key = (column, window, excluding)
        values = history.columns[column]
        if stop - start <= CURSOR_MIN and (cursors is None or key not in cursors):
            distinct = set(values[start:stop])
            distinct.discard(None)
            return distinct
        if cursors is None:
            cursors = history.cursors = {}
        cursor = cursors.get(key)
        if cursor is None:
            cursor = cursors[key] = Cursor(heaps=self.heaps[column])
        cursor.move(values, start, stop)
        return cursor.counts.keys()

    # -- memory ---------------------------------------------------------------------------------
    def note_idle(self, bucket: int, entity_id: str) -> None:
        """The entity's latest event is in ``bucket``: the sweep looks at it once that expires."""
        entities = self.idle.get(bucket)
        if entities is None:
            self.idle[bucket] = [entity_id]
        else:
            entities.append(entity_id)

    def expire(self, watermark: int) -> None:
        """Forget entities whose every event is older than what any in-time window needs."""
        cutoff = watermark - self.retention
        if self.labelled:
            self.forget(cutoff)
        last_full = (cutoff + 1) // self.bucket_us - 1  # buckets ending at or before cutoff
        for bucket in [b for b in self.idle if b <= last_full]:
            for entity_id in self.idle.pop(bucket):
                history = self.state.get(entity_id)
                if history is not None and history.bucket == bucket:
                    del self.state[entity_id]

    def new_history(self) -> History:
        return History(len(self.prefixes), len(self.columns) + self.labelled)

    # -- labels ---------------------------------------------------------------------------------
    def is_pending(self, event_id: str, label: str) -> bool:
        """Whether a label ``label`` arrived for this event before it (counted from now on)."""
        waiting = self.pending.get(event_id)
        return waiting is not None and label in waiting[0]

    def mark(self, target: str, label: str, watermark: int) -> None:
        """A label ``label`` arrived for event ``target``: later reads count the event in the
        labelled prefixes of that label (once, whatever the number of labels)."""
        roles = [
            (p, prefix[1])
            for p, prefix in enumerate(self.prefixes)
            if prefix[0] == "labelled" and prefix[2] == label
        ]
        if not roles:
            return
        where = self.ids.get(target)
        if where is None:  # not seen yet: counted when it arrives
            waiting = self.pending.get(target)
            if waiting is None:
                self.pending[target] = ({label}, watermark)
            else:
                waiting[0].add(label)
            return
        history = self.state.get(where[0])
        if history is None:
            return
        times, ids = history.times, history.columns[-1]
        at = next(
            (
                i
                for i in range(bisect_left(times, where[1]), bisect_right(times, where[1]))
                if ids[i] == target
            ),
            -1,
        )
        if at < 0:  # evicted: outside every window still read
            return
        for p, f in roles:
            if self.filters[f][0] is not None:
                fed = history.prefixes[self.prefixes.index(("fed", f))]
                if fed[at + 1] == fed[at]:
                    continue  # the definition's filter did not pass the event
            prefix = history.prefixes[p]
            if prefix[at + 1] == prefix[at]:
                for i in range(at + 1, len(prefix)):
                    prefix[i] += 1

    def forget(self, cutoff: int) -> None:
        """Drop ids older than any window reads and labels that waited a retention period."""
        for stale in [i for i, where in self.ids.items() if where[1] <= cutoff]:
            del self.ids[stale]  # in place: the generated code holds the dict
        for stale in [i for i, waiting in self.pending.items() if waiting[1] <= cutoff]:
            del self.pending[stale]


@dataclass
class OnlineFeature:
    """One definition, compiled: its names, windows and the group it reads."""

    spec: FeatureSpec
    key_field: str
    names: list[str]
    windows: list[int]  # seconds, aligned with names
    group: Group
    lateness: int  # seconds
    delay: int = 0  # seconds: label_delay

    @property
    def horizon(self) -> int:
        """Seconds of event time the state reaches back: the look-back a restart must replay."""
        return max(self.windows) + self.delay + self.lateness

    @property
    def state(self) -> dict[str, History]:
        return self.group.state


Snapshot = dict[str, dict[str, tuple[list[int], list[list[Any]], list[list[int]]]]]


class OnlineFeatures:
    """All online features of a project: ``observe`` an event, get its feature values.

    An event *reads* every feature whose entity it carries (a transaction sees the customer's
    login count) but *feeds* only the features declared for its type and passing their filter.
    """

    def __init__(self, features: Iterable[OnlineFeature], allowed_lateness: str | int = 0) -> None:
        self.features = list(features)
        self.lateness = lateness_us(allowed_lateness)
        groups: list[Group] = []
        for feature in self.features:
            if not any(feature.group is g for g in groups):
                groups.append(feature.group)
        self.groups = groups
        self.watermark = -(2**62)  # the latest event time observed, microseconds
        self.late_events = 0  # events later than the allowed lateness (metric)
        self._next_sweep = self.watermark
        self._sweep_every = min((g.bucket_us for g in groups), default=US)
        self.labelled = [g for g in groups if g.labelled]
        # Label events mark the events they name, after their own reads (only when some
        # definition reads labels: other projects' hot path does not change).
        mark = self._mark if self.labelled else None
        self.source, self._observe = generate(groups, mark)  # the hot path, inspectable
        self.derived: list[DerivedFeature] = []
        self._derived: dict[str, Evaluation] = {}  # event type -> its derived values, in order

    def add_derived(self, derived: Iterable[DerivedFeature]) -> None:
        """Compute these derived features after the aggregates (``derived.compile_derived``
        lists them in dependency order)."""
        self.derived = list(derived)
        self._derived = evaluations(self.derived)

    @property
    def names(self) -> list[str]:
        return [name for f in self.features for name in f.names] + [d.name for d in self.derived]

    def observe(self, event: Event, update: bool = True) -> dict[str, Any]:
        """Return the feature values the event sees, updating state with it when ``update``."""
        values: dict[str, Any] = {}
        ts = epoch_us(event.occurred_at)
        watermark = self.watermark
        if update:
            if ts > watermark:
                self.watermark = watermark = ts
                if ts >= self._next_sweep:
                    self._sweep(ts)
            elif ts < watermark - self.lateness:
                self.late_events += 1
        self._observe(event, ts, watermark, update, values)
        plan = self._derived.get(event.type)
        if plan is not None:
            evaluate(plan, {**event.values, "occurred_at": event.occurred_at, **values}, values)
        return values

    def _mark(self, event: Event, watermark: int) -> None:
        """After the label event's own reads (it does not see itself), mark what it names."""
        target = labelled_target(event.values)
        label = event.values.get("label")
        if target is None or label is None:
            return
        for group in self.labelled:
            group.mark(target, str(label), watermark)

    def _sweep(self, watermark: int) -> None:
        for group in self.groups:
            group.expire(watermark)
        self._next_sweep = watermark + self._sweep_every

    def entities(self) -> int:
        """Entity states held (one per group and entity id)."""
        return sum(len(g.state) for g in self.groups)

    def snapshot(self) -> Snapshot:
        """The state that matters, canonically: per definition and entity, the events that an
        in-time window can still reach (what a restart from the source layer must rebuild)."""
        result: Snapshot = {}
        for feature in self.features:
            group = feature.group
            cutoff = self.watermark - group.retention
            held = {}
            for entity_id, history in group.state.items():
                start = bisect_right(history.times, cutoff)
                if start < len(history.times):
                    held[entity_id] = history.held(start)
            result[feature.spec.name] = held
        return result


def _always(event: Event) -> bool:
    return True


def compile_features(
    specs: Iterable[FeatureSpec],
    entity_keys: Mapping[str, str],
    filters: Mapping[str, Callable[[Event], bool]],
    *,
    event_types: Mapping[str, HasFields] | None = None,
    allowed_lateness: str | int = DEFAULT_ALLOWED_LATENESS,
    lookups: LabelLookup | None = None,
) -> OnlineFeatures:
    """Compile definitions into online state.

    ``filters`` maps a definition's name to its compiled filter. ``event_types`` (the compiled
    ``EventType`` objects, whose fields include entity keys) gives the declared type of each
    aggregated field: integer sums stay integers and type errors are reported here; without it,
    every numeric value is aggregated as a ``number``. ``lookups`` (the engine's
    ``LookupIndex``) is where ``labelled_neighbours`` reads the risk labels; without it, none
    exists.
    """
    definitions = resolve(specs, entity_keys, event_types)
    lateness = lateness_us(allowed_lateness)
    groups: dict[tuple[str, frozenset[str], bool], Group] = {}
    compiled: list[OnlineFeature] = []
    for definition in definitions:
        types = frozenset(definition.spec.event_types)
        labelled = definition.spec.aggregation in LABELLED
        place = (definition.key_field, types, labelled)
        group = groups.get(place)
        if group is None:
            group = groups[place] = Group(definition.key_field, types, labelled=labelled)
        applies = filters.get(definition.spec.name, _always) if definition.spec.filter else _always
        group.attach(definition, applies, lateness, lookups)
        compiled.append(
            OnlineFeature(
                spec=definition.spec,
                key_field=definition.key_field,
                names=list(definition.names),
                windows=[w // US for w in definition.windows_us],
                group=group,
                lateness=lateness // US,
                delay=definition.delay_us // US,
            )
        )
    return OnlineFeatures(compiled, allowed_lateness=lateness // US)
