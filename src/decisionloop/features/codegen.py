"""The online hot path: one generated Python function per project.

For every group (definitions of one entity key fed by the same event types, see
:mod:`decisionloop.features.online`) the function holds, written out straight-line: the key lookup;
the update (filters, normalised values, one append to the times and to every column — or an
ordered insert when the event is out of order — batched eviction, the idle bucket); then the
reads: one bisection per distinct window and one line per feature name. Nothing about the
definitions is interpreted per event. ``OnlineFeatures.source`` shows the code.

Safety: the source is generated from definitions only; user text (feature, field and event type
names) reaches it solely as ``repr()`` of a string; every identifier is ours.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from decisionloop.domain.events import Event
from decisionloop.features.semantics import LABEL_EVENT, wide_float

if TYPE_CHECKING:
    from decisionloop.features.online import Group, Output

# observe(event, ts, watermark, update, out): writes every name the event sees into ``out``.
Observe = Callable[[Event, int, int, bool, dict[str, Any]], None]
COUNT, SUM, AVG, MIN, MAX, DISTINCT, STDDEV, FIRST_SEEN, SINCE_LAST = range(9)  # as in online.py
LABELLED_COUNT, LABELLED_SHARE, NEIGHBOURS = 9, 10, 11
# The others are NULL over no events.
_EMPTY = {COUNT: "0", DISTINCT: "0", LABELLED_COUNT: "0", NEIGHBOURS: "0"}


def generate(
    groups: list[Group], mark: Callable[[Event, int], None] | None = None
) -> tuple[str, Observe]:
    """The source of the observe function and the function itself; ``mark`` (when some
    definition reads labels) is called with every label event after its reads."""
    namespace: dict[str, Any] = {
        "bisect_left": bisect_left,
        "bisect_right": bisect_right,
        "_float": float,
        "_floor": math.floor,
        "_sqrt": math.sqrt,
        "_wide": wide_float,
        "MARK": mark,
    }
    # A filter text over the same event types means the same in every group: evaluated once.
    shared: dict[tuple[str, frozenset[str]], str] = {}
    body: list[str] = []
    by_key: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        by_key.setdefault(group.key_field, []).append(i)
    for key_field, members in by_key.items():
        body += [f"k = get({key_field!r})", "if k is not None:"]
        for i in members:
            body += ["    " + line for line in _group(i, groups[i], namespace, shared)]
    lines = [
        "def observe(event, ts, watermark, update, out):",
        "    get = event.values.get",
        "    etype = event.type",
        *(f"    {var} = None" for var in shared.values()),
        *("    " + line for line in body),
        *(
            [f"    if update and etype == {LABEL_EVENT!r}:", "        MARK(event, watermark)"]
            if mark is not None
            else []
        ),
        "    return None",
    ]
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<decisionloop.features.generated>", "exec"), namespace)
    observe: Observe = namespace["observe"]
    return source, observe


def _group(
    i: int, group: Group, namespace: dict[str, Any], shared: dict[tuple[str, frozenset[str]], str]
) -> list[str]:
    namespace[f"S{i}"] = group.state
    namespace[f"H{i}"] = group.new_history
    namespace[f"I{i}"] = group.note_idle
    namespace[f"V{i}"] = group.values_read
    if group.labelled:
        namespace[f"Q{i}"] = group.is_pending
        namespace[f"M{i}"] = group.ids
    if group.counters:
        namespace[f"G{i}"] = group.neighbours
        for c, counter in enumerate(group.counters):
            namespace[f"N{i}_{c}"] = counter
    types = sorted(group.event_types)
    if len(types) == 1:
        test = f"etype == {types[0]!r}"
    else:
        namespace[f"T{i}"] = group.event_types
        test = f"etype in T{i}"
    names = ", ".join(o.name for o in group.outputs)
    excluding = any(not o.include_current for o in group.outputs)
    code = [f"# {group.key_field} <- {', '.join(types)}: {names}", f"h = S{i}.get(k)"]
    if excluding:
        code.append("added = False")
    code.append(f"if update and {test} and ts > watermark - {group.retention}:")
    code += ["    " + line for line in _update(i, group, namespace, shared, excluding)]
    code.append("if h is None:")
    code += [f"    out[{o.name!r}] = {_EMPTY.get(o.code, 'None')}" for o in group.outputs]
    code.append("else:")
    code += ["    " + line for line in _read(i, group, excluding)]
    return code


def _update(
    i: int,
    group: Group,
    namespace: dict[str, Any],
    shared: dict[tuple[str, frozenset[str]], str],
    excluding: bool,
) -> list[str]:
    """Filters, then (when one passes) the event appended to the history and its columns."""
    code: list[str] = []
    passed: list[str] = []  # per filter: a local name, or "True" for "every event"
    for j, (text, applies) in enumerate(group.filters):
        if text is None:
            passed.append("True")
            continue
        var = shared.get((text, group.event_types))
        if var is None:
            var = shared[(text, group.event_types)] = f"g{len(shared)}"
            namespace[f"F{var}"] = applies
        code += [f"if {var} is None:", f"    {var} = F{var}(event)", f"f{j} = {var}"]
        passed.append(f"f{j}")
    inner: list[str] = []
    if group.labelled:
        code.append("eid = event.event_id")
    if "True" not in passed:
        code.append(f"if {' or '.join(passed)}:")
    inner += ["if h is None:", f"    h = S{i}[k] = H{i}()"]
    summed = {prefix[2] for prefix in group.prefixes if prefix[0] == "units"}
    for s, (field, kind) in enumerate(group.slots):
        inner += _normalise(s, field, kind, s in summed)
    increments = []
    for prefix in group.prefixes:
        role, f = prefix[0], passed[prefix[1]]
        if role == "fed":
            increments.append(f)
        elif role == "units":
            increments.append(f"q{prefix[2]}" if f == "True" else f"(q{prefix[2]} if {f} else 0)")
        elif role == "labelled":  # a label that arrived before its event
            pending = f"Q{i}(eid, {prefix[2]!r})"
            increments.append(f"(1 if {pending} else 0)" if f == "True" else f"({f} and {pending})")
        elif role == "squares":
            square = f"q{prefix[2]} * q{prefix[2]}"
            increments.append(square if f == "True" else f"({square} if {f} else 0)")
        else:
            present = f"v{prefix[2]} is not None"
            increments.append(f"({present})" if f == "True" else f"({f} and {present})")
    values = [
        f"v{s}" if passed[f] == "True" else f"(v{s} if {passed[f]} else None)"
        for f, s in group.columns
    ]
    if group.labelled:
        values.append("eid")  # the ids column, last
        inner.append(f"M{i}[eid] = (k, ts)")
    inner += ["times = h.times", "if not times or ts >= times[-1]:", "    times.append(ts)"]
    if group.prefixes:
        inner.append("    P = h.prefixes")
        for p, increment in enumerate(increments):
            inner += [f"    p = P[{p}]", f"    p.append(p[-1] + {increment})"]
    if values:
        inner.append("    C = h.columns")
        inner += [f"    C[{c}].append({value})" for c, value in enumerate(values)]
    inner += [
        "else:",
        f"    h.insert(ts, ({''.join(f'{x}, ' for x in increments)}), "
        f"({''.join(f'{x}, ' for x in values)}))",
        f"if times[0] <= watermark - {group.retention}:",
        f"    h.evict(watermark - {group.retention})",
        f"b = ts // {group.bucket_us}",
        "if b > h.bucket:",
        "    h.bucket = b",
        f"    I{i}(b, k)",
    ]
    if excluding:
        inner.append("added = True")
    indent = "    " if "True" not in passed else ""
    return code + [indent + line for line in inner]


def _normalise(s: int, field: str, kind: str, summed: bool) -> list[str]:
    """``v<s>``: the value as both engines hold it (numbers as floats, ``-0.0`` as ``0.0``);
    ``q<s>``: its quantised units when a sum or mean reads it (``semantics.quantise``). ``auto``
    (declared types unknown): ints and floats are numbers."""
    value = [f"v{s} = get({field!r})"]
    if kind == "number":
        value += [f"if v{s} is not None:", f"    v{s} = _float(v{s}) + 0.0"]
    elif kind == "auto":  # int or float, not bool (whose class is bool)
        value += [
            f"if v{s}.__class__ is float or v{s}.__class__ is int:",
            f"    v{s} = _float(v{s}) + 0.0",
        ]
    if not summed:
        return value
    if kind == "integer":
        return [*value, f"q{s} = 0 if v{s} is None else v{s}"]
    return [
        *value,
        f"q{s} = 0 if v{s} is None else _floor(v{s} * 1e6 + 0.5)",
    ]


def _read(i: int, group: Group, excluding: bool) -> list[str]:
    code = [
        "times = h.times",
        "end = len(times)",
        "if times[-1] > ts:",
        "    end = bisect_right(times, ts)",
        f"floor = watermark - {group.retention}",
        "first = times[0]",
    ]
    for w, width in enumerate(group.windows):
        code += [
            f"lo = ts - {width}",
            "if lo < floor:",
            "    lo = floor",
            f"s{w} = bisect_right(times, lo, 0, end) if first <= lo else 0",
        ]
    if excluding:
        code.append("x = end - 1 if added else end")
    if group.prefixes:
        code.append(f"{''.join(f'p{p}, ' for p in range(len(group.prefixes)))}= h.prefixes")
    for output in group.outputs:
        code += _output(i, output)
    return code


def _output(i: int, o: Output) -> list[str]:
    from decisionloop.features import online as _online  # its CURSOR_MIN, as tests may set it

    stop, start = ("end" if o.include_current else "x"), f"s{o.window}"
    target = f"out[{o.name!r}] = "
    if o.code == COUNT:
        if o.fed < 0:
            return [f"{target}{stop} - {start}"]
        return [f"{target}p{o.fed}[{stop}] - p{o.fed}[{start}]"]
    if o.code in (FIRST_SEEN, SINCE_LAST):
        return _age(o, target, start, stop)
    if o.code in (LABELLED_COUNT, LABELLED_SHARE):
        if o.near >= 0:  # label_delay: (t - delay - window, t - delay], never the current event
            stop = f"s{o.near}"
        labelled = f"p{o.labelled}[{stop}] - p{o.labelled}[{start}]"
        if o.code == LABELLED_COUNT:
            return [f"{target}{labelled}"]
        fed = f"{stop} - {start}" if o.fed < 0 else f"p{o.fed}[{stop}] - p{o.fed}[{start}]"
        return [f"n = {fed}", f"{target}_float({labelled}) / _float(n) if n else None"]
    if o.code == STDDEV:
        return _stddev(o, target, start, stop)
    if o.code in (SUM, AVG):
        total = f"p{o.units}[{stop}] - p{o.units}[{start}]"
        if o.code == SUM:
            value = total if o.integer else f"_float({total}) / 1e6"
        elif o.integer:
            value = f"_float({total}) / _float(n)"
        else:
            value = f"_float({total}) / _float(n * 1000000)"
        return [
            f"n = p{o.present}[{stop}] - p{o.present}[{start}]",
            f"{target}({value}) if n else None",
        ]
    # Small windows without a cursor: the slice, aggregated in C (Group.values_read otherwise).
    call = f"V{i}(h, {o.code}, {o.column}, {o.window}, {start}, {stop}, {stop} < end)"
    if o.code == NEIGHBOURS:  # the distinct neighbours, then their labels as of t_e
        call = f"G{i}(h, {o.column}, {o.window}, {start}, {stop}, {stop} < end)"
        return [
            f"if {stop} - {start} <= {_online.CURSOR_MIN} and h.cursors is None:",
            f"    w = set(h.columns[{o.column}][{start}:{stop}])",
            "    w.discard(None)",
            "else:",
            f"    w = {call}",
            f"{target}N{i}_{o.counter}(w, event.occurred_at)",
        ]
    if o.code == DISTINCT:
        small = [
            f"w = set(h.columns[{o.column}][{start}:{stop}])",
            "w.discard(None)",
            f"{target}len(w)",
        ]
    else:
        pick = "min" if o.code == MIN else "max"
        small = [
            f"w = h.columns[{o.column}][{start}:{stop}]",
            "if None in w:",
            "    w = [v for v in w if v is not None]",
            f"{target}{pick}(w) if w else None",
        ]
    return [
        f"if {stop} - {start} <= {_online.CURSOR_MIN} and h.cursors is None:",
        *("    " + line for line in small),
        "else:",
        f"    {target}{call}",
    ]


def _age(o: Output, target: str, start: str, stop: str) -> list[str]:
    """Seconds from the first (``first_seen_age``) or last (``time_since_last``) event the
    filter passed in ``[start, stop)``: found by bisecting the filter's prefix count."""
    if o.fed < 0:
        at = start if o.code == FIRST_SEEN else f"{stop} - 1"
        return [f"{target}_float(ts - times[{at}]) / 1e6 if {stop} > {start} else None"]
    p = f"p{o.fed}"
    if o.code == FIRST_SEEN:  # the first j with p[j] > p[start]: event j - 1 is the first fed
        found = f"bisect_right({p}, {p}[{start}], {start}, {stop} + 1)"
    else:  # the first j with p[j] == p[stop]: event j - 1 is the last fed
        found = f"bisect_left({p}, {p}[{stop}], {start}, {stop} + 1)"
    return [
        f"if {p}[{stop}] > {p}[{start}]:",
        f"    {target}_float(ts - times[{found} - 1]) / 1e6",
        "else:",
        f"    {target}None",
    ]


def _stddev(o: Output, target: str, start: str, stop: str) -> list[str]:
    """The sample standard deviation from exact integer totals (see ``semantics``)."""
    scale = "" if o.integer else " / 1e6"
    return [
        f"n = p{o.present}[{stop}] - p{o.present}[{start}]",
        "if n > 1:",
        f"    total = p{o.units}[{stop}] - p{o.units}[{start}]",
        f"    spread = n * (p{o.squares}[{stop}] - p{o.squares}[{start}]) - total * total",
        f"    {target}_sqrt(_wide(spread) / _float(n * (n - 1))){scale}",
        "else:",
        f"    {target}None",
    ]
