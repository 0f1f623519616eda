"""Rule evaluation benchmark (``python -m benchmarks.rules``).

For 100, 1,000 and 5,000 generated rules (conjunctions of 2-4 comparisons over 30 fields, fixed
seed) on 10,000 generated events, the time per event of:

- **online**: every rule compiled into one generated function (``rules/online.py``), one call per
  event, as ``DecisionEngine.decide`` runs it;
- **loop**: a plain loop over the per-rule closures of the reference compiler;
- **backtest**: DuckDB over a table of the 10,000 events, amortized per event: the backtest path
  of ``rules/backtest.py`` (atoms shared by rules evaluated once as generated SQL, fetched as
  Arrow bitmaps, the boolean skeleton of every rule on bitsets); and, up to 1,000 rules, the
  plain form, **one SELECT** with a boolean column per rule (DuckDB's planning of a projection
  grows with the square of its width, so 5,000 columns take minutes);
- **numpy**: hand-written numpy over columns, each distinct comparison computed once as packed
  bits and each rule an AND of them (a floor for batch work);
- peers when they are installed (never dependencies of the project; ``pip install zen-engine
  rule-engine``): **zen-engine**, one decision table with hit policy ``collect`` (a row per
  rule), and **rule-engine**, one ``Rule`` per rule with NULL guards.

Rules are written the way analysts write them: a field, an operator and a round threshold (two
significant digits) at a tail quantile of the field's distribution (90th to 99.5th percentile for
``>``, 1st to 10th for ``<``), an equality or IN on categorical values drawn from the traffic, or
a boolean flag. Every method's hits are checked against the closures.
Slow methods run on a prefix of the events (reported). Nothing is asserted; results go to a table
on stdout and to ``benchmarks/results/rules.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from rich.console import Console
from rich.table import Table

from decisionloop.rules import backtest as rules_backtest
from decisionloop.rules.expressions import Checked, Compiler, Source
from decisionloop.rules.online import compile_online
from decisionloop.rules.sql import arrow_table, select_sql
from decisionloop.rules.typecheck import SqlType

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "rules.json"
console = Console(width=None if sys.stdout.isatty() else 200)
SEED = 20260601
TARGET_ONLINE_US = 50.0
TARGET_BACKTEST_US = 10.0

# -- the fields: 6 categorical, 4 boolean, 20 numeric (event fields and entity features) --------
CATEGORIES: dict[str, tuple[list[str], list[float]]] = {
    "channel": (
        ["card_present", "card_online", "transfer", "instant_payment", "atm"],
        [40, 30, 15, 10, 5],
    ),
    "direction": (["debit", "credit"], [80, 20]),
    "currency": (["EUR", "USD", "GBP", "CHF", "PLN", "SEK"], [70, 10, 8, 5, 4, 3]),
    "country": (
        [f"C{i:02d}" for i in range(20)],
        [40, 10, 8, 6, 5, 4, 4, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1],
    ),
    "mcc": ([f"{5000 + 37 * i}" for i in range(30)], [1.0 / (i + 1) for i in range(30)]),
    "device_os": (["ios", "android", "web", "other"], [35, 40, 20, 5]),
}
BOOLEANS = {"is_new_device": 0.05, "is_new_payee": 0.08, "ip_is_proxy": 0.03, "card_present": 0.4}
# name -> (kind, scale): lognormal amounts, geometric counts, uniform rates / ages
NUMBERS: dict[str, tuple[str, float]] = {
    "amount": ("lognormal", 60.0),
    "balance_before": ("lognormal", 3000.0),
    "customer.txn_count_1h": ("count", 1.0),
    "customer.txn_count_24h": ("count", 6.0),
    "customer.debit_count_1h": ("count", 0.8),
    "customer.amount_sum_24h": ("lognormal", 250.0),
    "customer.avg_amount_30d": ("lognormal", 70.0),
    "customer.distinct_merchants_1h": ("count", 0.6),
    "customer.failed_logins_1h": ("count", 0.1),
    "customer.payee_adds_24h": ("count", 0.05),
    "customer.device_binds_24h": ("count", 0.03),
    "customer.password_changes_24h": ("count", 0.02),
    "customer.age_days": ("uniform", 3650.0),
    "account.age_days": ("uniform", 3000.0),
    "account.inbound_senders_24h": ("count", 0.3),
    "account.inbound_sum_24h": ("lognormal", 200.0),
    "device.distinct_accounts_7d": ("count", 0.2),
    "ip.distinct_customers_24h": ("count", 0.4),
    "merchant.chargeback_rate_90d": ("uniform", 0.02),
    "terminal.txn_count_1h": ("count", 3.0),
}
TYPES: dict[str, SqlType] = {
    **dict.fromkeys(CATEGORIES, "string"),
    **dict.fromkeys(BOOLEANS, "boolean"),
    **dict.fromkeys(NUMBERS, "number"),
}
NULL_SHARE = 0.03  # features of entities an event does not carry, optional fields


def generate_events(count: int, rng: random.Random) -> list[dict[str, Any]]:
    events = []
    for _ in range(count):
        row: dict[str, Any] = {}
        for name, (values, weights) in CATEGORIES.items():
            row[name] = rng.choices(values, weights)[0]
        for name, share in BOOLEANS.items():
            row[name] = rng.random() < share
        for name, (kind, scale) in NUMBERS.items():
            if rng.random() < NULL_SHARE:
                row[name] = None
            elif kind == "lognormal":
                row[name] = round(scale * rng.lognormvariate(0, 1.2), 2)
            elif kind == "count":
                row[name] = int(rng.expovariate(1 / scale)) if scale else 0
            else:
                row[name] = round(rng.uniform(0, scale), 4)
        events.append(row)
    return events


def _round(value: float) -> float | int:
    """Two significant digits, as analysts write thresholds (1000, 2500, 0.015)."""
    if value <= 0:
        return 0
    digits = 1 - math.floor(math.log10(value))
    rounded = round(value, digits)
    return int(rounded) if rounded >= 1 and rounded == int(rounded) else rounded


@dataclass(frozen=True)
class Comparison:
    name: str
    op: str  # = in > >= < <= is not
    value: Any


def generate_rules(
    count: int, events: list[dict[str, Any]], rng: random.Random
) -> list[list[Comparison]]:
    quantiles: dict[str, list[float]] = {}
    for name in NUMBERS:
        present = sorted(e[name] for e in events if e[name] is not None)
        # index 100 is the 99.5th percentile rather than the maximum
        quantiles[name] = [present[int(q * (len(present) - 1))] for q in np.linspace(0, 1, 101)]
        quantiles[name][100] = present[int(0.995 * (len(present) - 1))]
    names = list(TYPES)
    rules = []
    for _ in range(count):
        comparisons = []
        for name in rng.sample(names, rng.randint(2, 4)):
            if name in CATEGORIES:
                values, weights = CATEGORIES[name]
                if rng.random() < 0.7:
                    comparisons.append(Comparison(name, "=", rng.choices(values, weights)[0]))
                else:
                    picked = sorted(set(rng.choices(values, weights, k=3)))
                    comparisons.append(Comparison(name, "in", tuple(picked)))
            elif name in BOOLEANS:
                comparisons.append(Comparison(name, "is" if rng.random() < 0.7 else "not", None))
            elif rng.random() < 0.8:  # the upper tail: large, many, fast
                threshold = _round(quantiles[name][rng.choice([90, 95, 98, 99, 100])])
                op = ">" if threshold == 0 else rng.choice([">", ">="])
                comparisons.append(Comparison(name, op, threshold))
            else:  # the lower tail: new accounts, low balances
                threshold = _round(quantiles[name][rng.choice([1, 2, 5, 10])])
                comparisons.append(Comparison(name, "<=" if threshold == 0 else "<", threshold))
        rules.append(comparisons)
    return rules


def sql_text(rule: list[Comparison]) -> str:
    parts = []
    for c in rule:
        if c.op == "=":
            parts.append(f"{c.name} = '{c.value}'")
        elif c.op == "in":
            parts.append(f"{c.name} IN ({', '.join(repr(v) for v in c.value)})")
        elif c.op == "is":
            parts.append(c.name)
        elif c.op == "not":
            parts.append(f"NOT {c.name}")
        else:
            parts.append(f"{c.name} {c.op} {c.value}")
    return " AND ".join(parts)


# -- methods ------------------------------------------------------------------------------------
Hits = list[list[int]]  # per event, the indices of the rules that fired


def per_event(
    evaluate: Callable[[dict[str, Any]], list[int]],
    events: Sequence[dict[str, Any]],
    repeats: int = 1,
    block: int = 500,
) -> tuple[float, Hits]:
    """µs per event: each block of events timed ``repeats`` times, its fastest pass kept.

    On a shared machine a neighbour's burst slows some passes; the per-block minimum keeps what
    the code costs rather than what the neighbour did.
    """
    best = [math.inf] * ((len(events) + block - 1) // block)
    hits: Hits = []
    gc.collect()
    gc.disable()
    try:
        for repeat in range(repeats):
            for b, start in enumerate(range(0, len(events), block)):
                rows = events[start : start + block]
                started = time.perf_counter()
                fired = [evaluate(row) for row in rows]
                best[b] = min(best[b], time.perf_counter() - started)
                if repeat == 0:
                    hits += fired
    finally:
        gc.enable()
    return sum(best) / len(events) * 1e6, hits


def closure_loop(
    checked: list[Checked], compiler: Compiler
) -> Callable[[dict[str, Any]], list[int]]:
    closures = [compiler.closure(c) for c in checked]

    def evaluate(row: dict[str, Any]) -> list[int]:
        return [i for i, predicate in enumerate(closures) if predicate(row) is True]

    return evaluate


def backtest(
    checked: list[Checked], events: list[dict[str, Any]], wide: bool, copies: int = 1
) -> tuple[float, Hits, dict[str, float]]:
    """DuckDB over a table of the events (``copies`` times over), µs per event amortized.

    ``wide``: one SELECT with a boolean column per rule (``select_sql``), results fetched as
    Arrow. Otherwise the backtest path (``rules/backtest.py``): shared atoms in SQL, the boolean
    skeleton on bitsets. Preparing the SQL (sqlglot) is compile time, reported apart.
    """
    con = duckdb.connect()
    con.register("incoming", arrow_table(events, TYPES))
    con.execute(
        "CREATE TABLE events AS SELECT incoming.* FROM incoming, range(?) ORDER BY range",
        [copies],
    ).fetchall()
    con.unregister("incoming")
    rows = len(events) * copies
    named = [(f"r{i}", c) for i, c in enumerate(checked)]
    started = time.perf_counter()
    prepared: Any = select_sql(named, "events") if wide else rules_backtest.plan(named)
    prepare_s = time.perf_counter() - started
    timings = []
    hits: Hits = []
    for repeat in range(2 if wide else 3):
        started = time.perf_counter()
        if wide:
            result = con.sql(prepared).to_arrow_table()
        else:
            bits = rules_backtest.evaluate(con, "events", prepared)
        timings.append(time.perf_counter() - started)
        if repeat == 0 and copies == 1:
            if wide:
                matrix = np.column_stack([c.to_numpy(zero_copy_only=False) for c in result.columns])
                hits = [list(np.flatnonzero(row == True)) for row in matrix]  # noqa: E712
            else:
                hits = bits.fired()
    con.close()
    extra = {"prepare_s": round(prepare_s, 3)}
    if not wide:
        extra["atoms"] = len(prepared.atoms)
    return min(timings) / rows * 1e6, hits, extra


def numpy_batch(rules: list[list[Comparison]], events: list[dict[str, Any]]) -> tuple[float, Hits]:
    """Hand-written numpy over columns: each distinct comparison once, as packed bits (NULL is
    NaN / None: never TRUE), each rule an AND of its comparisons' bits. Column loading is not
    timed (as the DuckDB table's is not)."""
    columns: dict[str, np.ndarray] = {}
    codes: dict[str, dict[str, int]] = {}
    for name, kind in TYPES.items():
        values = [e[name] for e in events]
        if kind == "number":
            columns[name] = np.array([np.nan if v is None else v for v in values], dtype=float)
        elif kind == "boolean":
            columns[name] = np.array([v is True for v in values])
            columns[f"not {name}"] = np.array([v is False for v in values])
        else:  # categories as integer codes (-1 for NULL), as a hand-writer would
            codes[name] = {v: i for i, v in enumerate(CATEGORIES[name][0])}
            columns[name] = np.array([codes[name].get(v, -1) for v in values], dtype=np.int16)
    ops = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}

    def mask(c: Comparison) -> np.ndarray:
        if c.op == "=":
            return columns[c.name] == codes[c.name][c.value]
        if c.op == "in":
            return np.isin(columns[c.name], [codes[c.name][v] for v in c.value])
        if c.op == "is":
            return columns[c.name]
        if c.op == "not":
            return columns[f"not {c.name}"]
        return ops[c.op](columns[c.name], c.value)

    def run() -> np.ndarray:
        packed: dict[Comparison, np.ndarray] = {}
        out = np.empty((len(rules), (len(events) + 7) // 8), dtype=np.uint8)
        for i, rule in enumerate(rules):
            bits = []
            for c in rule:
                if c not in packed:
                    packed[c] = np.packbits(mask(c), bitorder="little")
                bits.append(packed[c])
            acc = bits[0] & bits[1]
            for more in bits[2:]:
                acc &= more
            out[i] = acc
        return out

    timings = []
    matrix = None
    for _ in range(3):
        started = time.perf_counter()
        matrix = run()
        timings.append(time.perf_counter() - started)
    assert matrix is not None
    unpacked = np.unpackbits(matrix, axis=1, count=len(events), bitorder="little")
    hits = [list(np.flatnonzero(unpacked[:, j])) for j in range(len(events))]
    return min(timings) / len(events) * 1e6, hits


def zen_table(
    rules: list[list[Comparison]],
    fields: Sequence[str] = tuple(TYPES),
    ids: Sequence[int] | None = None,
) -> Any:
    """One decision table, a row per rule. ``fields``: the input columns; ``ids``: the rule
    number each row reports (default its position; rows of one rule written as several
    alternatives share it, and a rule is reported once however many of its rows match)."""
    import zen  # a peer for this benchmark only

    inputs = [{"id": f"i{k}", "name": name, "field": name} for k, name in enumerate(fields)]
    column = {name: f"i{k}" for k, name in enumerate(fields)}
    numbers = list(range(len(rules))) if ids is None else list(ids)
    rows = []
    for position, rule in enumerate(rules):
        index = numbers[position]
        row = {
            "_id": f"r{position}",
            **{f"i{k}": "" for k in range(len(fields))},
            "o": f'"{index}"',
        }
        for c in rule:
            if c.op == "=":
                cell = json.dumps(c.value)
            elif c.op == "in":
                cell = ", ".join(json.dumps(v) for v in c.value)
            elif c.op in ("is", "not"):
                cell = "true" if c.op == "is" else "false"
            else:
                cell = f"{c.op} {c.value}"
            row[column[c.name]] = cell
        rows.append(row)
    content = {
        "contentType": "application/vnd.gorules.decision",
        "nodes": [
            {"id": "in", "type": "inputNode", "name": "event", "position": {"x": 0, "y": 0}},
            {
                "id": "table",
                "type": "decisionTableNode",
                "name": "rules",
                "position": {"x": 300, "y": 0},
                "content": {
                    "hitPolicy": "collect",
                    "inputs": inputs,
                    "outputs": [{"id": "o", "name": "rule", "field": "rule"}],
                    "rules": rows,
                },
            },
            {"id": "out", "type": "outputNode", "name": "fired", "position": {"x": 600, "y": 0}},
        ],
        "edges": [
            {"id": "e1", "sourceId": "in", "targetId": "table"},
            {"id": "e2", "sourceId": "table", "targetId": "out"},
        ],
    }
    decision = zen.ZenEngine().create_decision(json.dumps(content))

    def evaluate(row: dict[str, Any]) -> list[int]:
        # Dotted feature names are flat keys here, as the table's fields are.
        result = decision.evaluate(_nested(row))["result"]
        return sorted({int(hit["rule"]) for hit in result}) if isinstance(result, list) else []

    return evaluate


def _nested(row: dict[str, Any]) -> dict[str, Any]:
    """zen reads ``customer.txn_count_1h`` as a path: nest the dotted names."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        head, _, tail = name.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[name] = value
    return out


def rule_engine_rules(rules: list[list[Comparison]], ids: Sequence[int] | None = None) -> Any:
    """One ``Rule`` per rule; ``ids`` as for :func:`zen_table`."""
    import rule_engine  # a peer for this benchmark only

    numbers = list(range(len(rules))) if ids is None else list(ids)

    def name(n: str) -> str:
        return n.replace(".", "__")

    compiled = []
    for rule in rules:
        parts = []
        for c in rule:
            n = name(c.name)
            if c.op == "=":
                parts.append(f"{n} == {json.dumps(c.value)}")
            elif c.op == "in":  # NULL IN (...) is never TRUE in SQL
                values = ", ".join(json.dumps(v) for v in c.value)
                parts.append(f"({n} != null and {n} in [{values}])")
            elif c.op in ("is", "not"):
                parts.append(f"{n} == {'true' if c.op == 'is' else 'false'}")
            else:  # rule-engine refuses to compare null: guard it, as SQL's NULL does
                op = {">": ">", ">=": ">=", "<": "<", "<=": "<="}[c.op]
                parts.append(f"({n} != null and {n} {op} {c.value})")
        compiled.append(rule_engine.Rule(" and ".join(parts)))

    def evaluate(row: dict[str, Any]) -> list[int]:
        flat = {name(k): v for k, v in row.items()}
        return sorted({numbers[i] for i, r in enumerate(compiled) if r.matches(flat)})

    return evaluate


def peer(name: str) -> bool:
    try:
        __import__({"zen-engine": "zen", "rule-engine": "rule_engine"}[name])
    except ImportError:
        return False
    return True


def agreement(reference: Hits, hits: Hits) -> float:
    same = sum(1 for a, b in zip(reference, hits, strict=False) if list(a) == list(b))
    return same / len(hits)


def run_size(
    count: int,
    events: list[dict[str, Any]],
    peers_events: int,
    wide_limit: int,
    rng: random.Random,
) -> dict[str, Any]:
    rules = generate_rules(count, events, rng)
    texts = [sql_text(r) for r in rules]
    compiler = Compiler(TYPES)
    started = time.perf_counter()
    checked = [compiler.check(t, Source(f"rule r{i}")) for i, t in enumerate(texts)]
    parse_s = time.perf_counter() - started
    started = time.perf_counter()
    online = compile_online(checked)
    compile_s = time.perf_counter() - started

    result: dict[str, Any] = {
        "rules": count,
        "events": len(events),
        "parse_and_check_s": round(parse_s, 3),
        "online_compile_s": round(compile_s, 3),
        "online_stats": online.stats,
        "generated_lines": online.stats.get("lines"),
    }
    loop_events = events if count <= 100 else events[: 2_000_000 // count]
    loop_us, reference = per_event(closure_loop(checked, compiler), loop_events, repeats=2)
    online_us, online_hits = per_event(online.evaluate, events, repeats=5)
    result["loop_us"] = round(loop_us, 2)
    result["loop_events"] = len(loop_events)
    result["online_us"] = round(online_us, 2)
    result["online_agrees"] = agreement(reference, online_hits[: len(reference)])
    fired = sum(len(h) for h in online_hits)
    result["hits_per_event"] = round(fired / len(events), 3)
    result["rules_hit_at_least_once"] = len({i for h in online_hits for i in h})

    backtest_us, backtest_hits, extra = backtest(checked, events, wide=False)
    result["backtest_us"] = round(backtest_us, 2)
    result["backtest_sql_prepare_s"] = extra["prepare_s"]
    result["backtest_atoms"] = extra["atoms"]
    result["backtest_agrees"] = agreement(online_hits, backtest_hits)
    result["backtest_x10_rows_us"] = round(backtest(checked, events, wide=False, copies=10)[0], 2)
    if count <= wide_limit:
        wide_us, wide_hits, extra = backtest(checked, events, wide=True)
        result["one_select_us"] = round(wide_us, 2)
        result["one_select_sql_prepare_s"] = extra["prepare_s"]
        result["one_select_agrees"] = agreement(online_hits, wide_hits)
    numpy_us, numpy_hits = numpy_batch(rules, events)
    result["numpy_us"] = round(numpy_us, 2)
    result["numpy_agrees"] = agreement(online_hits, numpy_hits)

    subset = events[: min(peers_events, max(100, peers_events * 1000 // count))]
    if peer("zen-engine"):
        started = time.perf_counter()
        evaluate = zen_table(rules)
        result["zen_compile_s"] = round(time.perf_counter() - started, 3)
        zen_us, zen_hits = per_event(evaluate, subset, repeats=2, block=100)
        result["zen_us"] = round(zen_us, 2)
        result["zen_events"] = len(subset)
        result["zen_agrees"] = agreement(online_hits, zen_hits)
    if peer("rule-engine"):
        evaluate = rule_engine_rules(rules)
        small = subset[: max(50, 100_000 // count)]
        re_us, re_hits = per_event(evaluate, small, block=50)
        result["rule_engine_us"] = round(re_us, 2)
        result["rule_engine_events"] = len(small)
        result["rule_engine_agrees"] = agreement(online_hits, re_hits)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--peer-events", type=int, default=1_000, help="events for slow peers")
    parser.add_argument(
        "--one-select-up-to", type=int, default=1_000, help="largest size for the one-SELECT form"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    rng = random.Random(SEED)
    events = generate_events(args.events, rng)
    load_before = os.getloadavg()
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        console.print(f"[bold]{size} rules[/bold] ...")
        results.append(
            run_size(
                size, events, args.peer_events, args.one_select_up_to, random.Random(SEED + size)
            )
        )
    load_after = os.getloadavg()

    table = Table(title=f"Rules: µs per event ({args.events:,} events)")
    for column in (
        "rules",
        "online",
        "loop",
        "loop/online",
        "backtest",
        "backtest 10x rows",
        "one SELECT",
        "numpy",
        "zen-engine",
        "zen/online",
        "rule-engine",
        "compile s",
        "hits/event",
    ):
        table.add_column(column, justify="right")
    for r in results:
        zen = r.get("zen_us")
        table.add_row(
            f"{r['rules']:,}",
            f"{r['online_us']:.1f}",
            f"{r['loop_us']:.1f}",
            f"{r['loop_us'] / r['online_us']:.1f}x",
            f"{r['backtest_us']:.2f}",
            f"{r['backtest_x10_rows_us']:.2f}",
            f"{r['one_select_us']:.1f}" if "one_select_us" in r else "-",
            f"{r['numpy_us']:.2f}",
            f"{zen:,.0f}" if zen is not None else "-",
            f"{zen / r['online_us']:.0f}x" if zen is not None else "-",
            f"{r['rule_engine_us']:,.0f}" if "rule_engine_us" in r else "-",
            f"{r['parse_and_check_s']:.2f}+{r['online_compile_s']:.2f}",
            f"{r['hits_per_event']:.2f}",
        )
    console.print(table)
    largest = results[-1]
    online_met = "met" if largest["online_us"] <= TARGET_ONLINE_US else "NOT met"
    backtest_met = "met" if largest["backtest_us"] <= TARGET_BACKTEST_US else "NOT met"
    console.print(
        f"targets at {largest['rules']:,} rules: online {largest['online_us']:.1f} µs "
        f"(≤ {TARGET_ONLINE_US:.0f}: {online_met}), backtest {largest['backtest_us']:.2f} µs "
        f"(≤ {TARGET_BACKTEST_US:.0f}: {backtest_met})"
    )
    for r in results:
        disagreements = {
            k: v for k, v in r.items() if k.endswith("_agrees") and isinstance(v, float) and v < 1
        }
        if disagreements:
            console.print(
                f"[yellow]{r['rules']} rules: hit sets differ from online: {disagreements}"
            )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "rules",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "seed": SEED,
        "targets_us": {"online_at_5000": TARGET_ONLINE_US, "backtest": TARGET_BACKTEST_US},
        "results": results,
    }
    args.output.write_text(json.dumps(document, indent=2, default=str) + "\n")
    console.print(f"written {args.output}")


if __name__ == "__main__":
    main()
