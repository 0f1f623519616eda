"""What a feature value means: the one definition that the online and offline engines implement.

A definition (``FeatureSpec``) expands over its windows into names ``<entity>.<name>_<window>``
(``customer.debit_count_1h``). Notation: every stored event ``x`` has an ingestion sequence
``seq_x`` (the source layer's ``seq``: the order in which the bank accepted it), an event time
``t_x`` (``occurred_at``, microseconds since the epoch, UTC) and a type. ``x`` *feeds* a definition
when its type is one of the declared ``event_types``, it carries the entity's key, and the
``filter`` (the rule language; three-valued logic) is exactly true for it.

**The value an event sees.** For an event ``e`` that carries key ``k`` of the definition's entity,
the window-``w`` value *as known at decision time* aggregates the events ``x`` that

* feed the definition and carry the same key ``k``,
* were ingested before ``e``: ``seq_x < seq_e`` (a later arrival, a label learnt weeks later or an
  event with the same timestamp ingested after ``e``, is never seen),
* fall in the window ``t_e - w < t_x <= t_e`` (an earlier ingestion with a later event time is not
  in ``e``'s window either),

plus ``e`` itself when ``include_current`` is true and ``e`` feeds the definition. An event that
does not carry the key sees NULL (online: the name is absent from the values). An event reads every
definition of every entity it carries, whether or not it feeds them.

**Aggregations.** ``count``: the number of such events (a NULL field value counts; the field is
irrelevant). ``sum``, ``avg``, ``min``, ``max``: over the non-NULL field values, NULL when there are
none. ``distinct_count``: the number of distinct non-NULL values, 0 when there are none.
``stddev``: the *sample* standard deviation of the non-NULL field values (``n - 1`` in the
denominator, as DuckDB's ``stddev``/``stddev_samp`` and pandas), NULL below two values.
``first_seen_age``: seconds from the earliest event time among the events aggregated to ``t_e``,
NULL when there are none: how long the entity has been seen, capped by the window (0.0 when the
current event, included, is the first). ``time_since_last``: seconds from the latest event time
among the events aggregated *other than* ``e`` itself to ``t_e``, NULL when there are none
(``include_current`` has no effect: ``e``'s own time would always give 0). Both read no field; both
are ``double((t_e - t_x) µs) / 1e6`` — exact, windows are far below 2^53 µs.

**Label-aware aggregations.** A *label* is an event of type ``label`` whose field ``label`` names
it (``fraud``) and whose ``refers_to_event_id`` — or, when that is NULL, ``entity_id`` with
``entity_type = 'event'`` — is the id of the event it labels. A label is *available* to ``e`` when
it was ingested before ``e``: ``seq_L < seq_e``, the same "as known at decision time" rule as every
other value, so a chargeback learnt weeks later never reaches the training rows of the events
decided before it (nor does a label stamped with an early ``occurred_at``: only arrival counts).
``labelled_count``: the number of events aggregated (as ``count`` would count them) that have at
least one available label ``label`` (duplicates count once). ``labelled_share``: that number as a
double divided by the ``count`` of the same events, NULL when there are none. Both read no field.

*Delayed label rates.* With ``label_delay: D`` (``labelled_count`` and ``labelled_share`` only) each
window moves back by ``D``: the events aggregated are the ones defined above but with
``t_e - D - w < t_x <= t_e - D`` — events old enough for their labels to have arrived (chargebacks
take days to weeks), so that a rate is not diluted by recent events whose labels cannot be known
yet; this is how the fraud literature's delayed risk features count (terminal fraud rate over the
windows ending a feedback delay ago). ``include_current`` has no effect then (``e`` is never that
old), and a label still counts only when it was ingested before ``e``: the delay never lets a label
learnt later leak in. The state reaches back ``w + D`` (retention and restart look-back include
``D``). ``D = 0`` is the undelayed value.

Imported history must therefore be loaded in the order the bank learnt things, each label stamped
with the time it became known: the demo bank does (labels at ``label_at``, everything sorted by
``occurred_at``), so its ``seq`` order is the labels' availability order. A label that arrives
before the event it names counts from that event's arrival on; online, such a label waits for its
event for one retention period (then it is forgotten: best effort, like a late event), and a
restart replays labels stamped within the look-back only.

**Labelled neighbours (link features).** Risk labels on entities (``mule`` on account ``A1``) live
in the ops store, not in the events: each has the wall-clock time it was added (``created_at``) and
ends at the earlier of its removal and its expiry, a history that is never rewritten (removals and
expiries are recorded, not deleted). A label is *in force at* an instant ``t`` when ``created_at
<= t`` and ``t`` is before its end — the interval ``[created, end)`` that ``has_label`` uses.
``labelled_neighbours`` (``field``: an entity key of the events, ``neighbour``: the entity it is
the key of, ``label``) is the number of distinct non-NULL values of ``field`` among the events
aggregated (exactly the ones ``distinct_count`` of that field counts) for which some label
``label`` of entity type ``neighbour`` and that id is in force at ``t_e``, the *event time* of the
reading event; 0 when there are none.

Why the event time and not the decision time (``decided_at``, the clock ``has_label`` reads in
rules): a feature value must be a function of stored data so that the offline engine reproduces
it for every event — events ingested without a decision (imports, ``/ingest``) and restarts
included — and the feature engine runs before the decision is timed. ``t_e`` is that function: the
online engine asks the in-memory index as of ``t_e``, the offline engine joins the history with
the same interval, and since the history keeps every removal and expiry, both see what was in
force at ``t_e`` however much later they are asked: a label added, removed or expiring after
``t_e`` never changes the value. A backtest therefore reads the very values the engine saw. For
imported events a backtest's ``decided_at`` *is* ``t_e`` (the rules' ``has_label`` and this
feature agree exactly); for live ones ``decided_at`` is ``t_e`` plus the ingestion latency, and a
label added within that latency is seen by ``has_label``, not by the feature — conservative, never
a leak. One gap is inherent: an event dated ahead of the bank's clock (accepted up to
``max_future_skew``) is decided before ``t_e``; a label changed between the decision and ``t_e``
is seen by the offline value only. The labels' ``created_at`` and ``t_e`` are compared as exact
microseconds (``created_at == t_e`` is in force, an end at ``t_e`` is not).

**Exact numbers.** Summation order differs between an incremental engine and a SQL engine, and
floating-point addition is not associative, so float sums would differ in the last bits. Both
engines therefore add integers. A value of a ``number`` field is first *quantised* to
``floor(v * 1e6 + 0.5)`` micro-units (the product and the addition in IEEE double: two roundings
that every engine performs identically); quantised values are added exactly as 64-bit integers
(in SQL: ``sum`` of ``BIGINT``; online: Python integers, prefix sums). The total ``S`` leaves as
``double(S) / 1e6`` and the mean of ``n`` values as ``double(S) / double(n * 1e6)``: one correctly
rounded integer-to-double conversion and one IEEE division on both sides. So ``sum``/``avg`` of a
``number`` field are exact to 1e-6 (money has at most 4 decimals in practice), independent of the
order of events, and identical online and offline. The quantised total must stay within a signed
64-bit integer (|sum| < 9.2e12 units; SQL raises beyond it). ``integer`` fields are summed exactly
as integers (``sum`` returns an integer, ``avg`` is ``double(S) / double(n)``). ``min``/``max``/
``distinct_count`` do no arithmetic and are exact by nature; ``number`` values are normalised with
``v + 0.0`` so that ``-0.0`` and ``0.0`` are one value in both engines.

**Exact standard deviations.** With ``n`` values, ``S`` their (quantised) total and ``Q`` the total
of their squares, both engines form the exact integer ``D = n * Q - S * S`` (never negative: no
cancellation, however large the mean) — Python integers online, 128-bit integers offline, so
``|D|`` must stay below 2^125 (amounts up to about 1e9 over thousands of events). ``D`` becomes a
double through one defined recipe, :func:`wide_float` (integer-to-double conversions of two
64-bit halves and one addition, since engines convert 128-bit integers differently), and the
value is ``sqrt(wide_float(D) / double(n * (n - 1)))`` divided by ``1e6`` for ``number`` fields:
IEEE operations that every engine rounds identically.

**Ties.** Events with the same event time are ordered by ingestion: ``e`` sees an equal-time event
ingested before it, never one ingested after it.

**Lateness.** The online engine keeps, per entity, only what a window can still need. Its
*watermark* ``W`` is the latest event time observed. An event is *in time* when ``t_e >= W - L``,
``L`` being the project's ``allowed_lateness`` (one value for the project: lateness is a property
of the event feeds, not of a definition; it decides one metric, one restart look-back and one rule
for every feature). State is kept back to ``W - R``, the *retention* ``R`` being the longest window
(plus its ``label_delay``) among the entity's definitions fed by the same event types, plus
``L``. So an in-time event — in order, tied, or out of order by up to ``L`` — sees exactly the
values defined above, identical to the offline engine. An event later than ``L`` is still stored
by the service and still feeds later events (they see it, online and offline alike), but the
values it sees itself are best effort: its windows are cut at ``W - R`` (deterministically, so a
restarted service answers the same), and if it is older than ``W - R`` it is not kept at all.
Such events are counted in ``OnlineFeatures.late_events`` (export it as a metric); offline values
stay exact for them.

**Restart.** Online state is a cache of the source layer: replaying the events with
``occurred_at >= latest - horizon`` (``horizon`` = the longest window, plus its delay, of all
+ ``L``) in event-time order rebuilds the same state as uninterrupted operation
(``OnlineFeatures.snapshot`` compares them); the service must also start its watermark there
(it does, by replaying).

**Ingestion order online.** The online engine must observe events in ingestion order — the order
of ``seq``. The service does (it observes an event and queues it for the loop's group commit in
one step on the event loop); a replay must feed events in ``seq`` order to reproduce the
decisions, but may rebuild *state* in event-time order (the state does not depend on the order
of arrival).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from decisionloop.errors import DefinitionError, Problem
from decisionloop.features.links import link_problems
from decisionloop.project.definitions import FIELDLESS, FeatureSpec, FieldSpec, window_seconds

# Micro-units: the fixed point of number sums and means (see "Exact numbers" above).
NUMBER_SCALE = 1_000_000
_SCALE_FLOAT = float(NUMBER_SCALE)
# How late (in event time, behind the latest event seen) an event may arrive and still see exactly
# the offline values. Five minutes covers retried app events and queue delays at the cost of five
# more minutes of retained state per entity; a project declares its own (``allowed_lateness``).
DEFAULT_ALLOWED_LATENESS = "5m"
US = 1_000_000  # microseconds per second
# The event type of labels and the fields that name the label and the event it is about.
LABEL_EVENT = "label"
LABEL_FIELDS = ("label", "refers_to_event_id", "entity_type", "entity_id")

# The declared type of the aggregated field, as both engines need it: "none" for count (or no
# field), "auto" online when the event types are unknown (numbers are then treated as number).
ValueKind = Literal["none", "number", "integer", "boolean", "string", "timestamp", "auto"]
_KINDS: dict[str, ValueKind] = {
    "number": "number",
    "integer": "integer",
    "boolean": "boolean",
    "string": "string",
    "enum": "string",
    "timestamp": "timestamp",
}
SUMMABLE: frozenset[ValueKind] = frozenset({"number", "integer", "auto"})


class HasFields(Protocol):
    """An event type as both ``EventTypeSpec`` (declared) and ``EventType`` (compiled) show it."""

    @property
    def fields(self) -> Mapping[str, FieldSpec]: ...


def quantise(value: Any) -> int:
    """A number in micro-units, exactly as SQL's ``CAST(floor(v * 1e6 + 0.5) AS BIGINT)``."""
    return math.floor(float(value) * _SCALE_FLOAT + 0.5)


def number_total(units: int) -> float:
    return float(units) / _SCALE_FLOAT


def number_mean(units: int, count: int) -> float:
    return float(units) / float(count * NUMBER_SCALE)


def integer_mean(total: int, count: int) -> float:
    return float(total) / float(count)


# wide_float splits an integer at 2^62: both halves fit a signed 64-bit integer for |D| < 2^125.
WIDE_SPLIT = 2**62


def wide_float(value: int) -> float:
    """A non-negative integer below 2^125 as a double, as the offline SQL computes it: each
    64-bit half converted (correctly rounded), the high one scaled exactly, then one addition."""
    return float(value >> 62) * 4611686018427387904.0 + float(value & (WIDE_SPLIT - 1))


def labelled_target(values: Mapping[str, Any]) -> str | None:
    """The id of the event a label event is about (``refers_to_event_id``, else ``entity_id``
    when ``entity_type`` is ``event``)."""
    target = values.get("refers_to_event_id")
    if target is None and values.get("entity_type") == "event":
        target = values.get("entity_id")
    return None if target is None else str(target)


def feature_names(spec: FeatureSpec) -> list[str]:
    return [f"{spec.entity}.{spec.name}_{window}" for window in spec.windows]


@dataclass(frozen=True)
class Definition:
    """One feature definition resolved against the project: what both engines compile."""

    spec: FeatureSpec
    key_field: str
    names: tuple[str, ...]
    windows_us: tuple[int, ...]  # aligned with names
    kind: ValueKind
    delay_us: int = 0  # label_delay: every window ends this long before the event

    @property
    def longest_us(self) -> int:
        """How far back in event time the values reach: the longest window, plus the delay."""
        return max(self.windows_us) + self.delay_us


def field_kind(
    spec: FeatureSpec, event_types: Mapping[str, HasFields] | None
) -> tuple[ValueKind, list[str]]:
    """The value kind of a definition's field and the problems that make it unusable."""
    if spec.field is None or spec.aggregation in FIELDLESS:
        return "none", []
    if event_types is None:
        return "auto", []
    declared = {
        _KINDS[fields[spec.field].type]
        for t in spec.event_types
        if t in event_types and spec.field in (fields := event_types[t].fields)
    }
    problems = []
    if not declared:
        problems.append(f"field {spec.field!r} is declared by none of {spec.event_types}")
    elif len(declared) > 1:
        problems.append(f"field {spec.field!r} has different types: {sorted(declared)}")
    kind: ValueKind = next(iter(declared)) if len(declared) == 1 else "auto"
    if spec.aggregation in ("sum", "avg", "stddev") and declared and kind not in SUMMABLE:
        problems.append(
            f"{spec.aggregation} needs a number or integer field, {spec.field!r} is a {kind}"
        )
    return kind, problems


def resolve(
    specs: Iterable[FeatureSpec],
    entity_keys: Mapping[str, str],
    event_types: Mapping[str, HasFields] | None = None,
) -> list[Definition]:
    """Resolve definitions (entity key, windows, value kind); one error lists every problem."""
    resolved: list[Definition] = []
    problems: list[Problem] = []
    for spec in specs:
        kind, found = field_kind(spec, event_types)
        if spec.entity not in entity_keys:
            found.append(f"unknown entity {spec.entity!r}")
        found += [reason for _, reason in link_problems(spec, entity_keys)]
        problems.extend(Problem(f"feature {spec.name}", reason) for reason in found)
        if found:
            continue
        resolved.append(
            Definition(
                spec=spec,
                key_field=entity_keys[spec.entity],
                names=tuple(feature_names(spec)),
                windows_us=tuple(window_seconds(w) * US for w in spec.windows),
                kind=kind,
                delay_us=spec.label_delay_seconds * US,
            )
        )
    if problems:
        raise DefinitionError(f"{len(problems)} problem(s) in feature definitions", problems)
    return resolved


def lateness_us(allowed_lateness: str | int) -> int:
    """``"5m"`` (or seconds as an integer) in microseconds."""
    seconds = allowed_lateness if isinstance(allowed_lateness, int) else None
    if seconds is None:
        seconds = window_seconds(str(allowed_lateness))
    if seconds < 0:
        raise ValueError("allowed_lateness must not be negative")
    return seconds * US
