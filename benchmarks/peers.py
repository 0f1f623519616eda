"""The decision workload's rules, ours against peers, in one run (``python -m benchmarks.peers``).

The rule set is the one ``benchmarks.decide`` builds (the example project's 7 analyst rules and
4,993 generated ones in their style, over the demo bank's fields and 50 features, with
``has_label``, ``in_list`` and time of day); the rows are the ones the engine evaluates rules on
for the demo bank's live transactions (fields, feature values, the decision time). Each method
evaluates the first 100, 1,000 and 5,000 rules on the same rows:

- **ours**: the strategy's generated function (``rules/online.py``), the engine's rules stage;
- **naive loop**: a plain Python loop over the rules, each a list of comparisons;
- **zen-engine**: one decision table with hit policy ``collect``, a row per rule (two for the
  analyst rule written with ``or``);
- **rule-engine**: one ``Rule`` per rule, NULLs guarded as SQL does.

For the naive loop and the peers, ``has_label``, ``in_list``, ``hour(occurred_at)`` and the two
ratios of the analyst rules (``amount >= 0.7 * balance_before`` ...) are computed before the
clock starts, as plain boolean or number inputs: the peers are timed on less work than ours.
Fired rules must agree exactly with ours on every row (reported). Times are µs per event, each
block of rows timed several times and its fastest pass kept (``benchmarks.rules.per_event``).
Output: a table on stdout and ``benchmarks/results/peers.json``; the target (ours ≥ 50x faster
than zen-engine at 5,000 rules) is printed as met or not met.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks import decide, ingest
from benchmarks.rules import Comparison, agreement, peer, per_event, rule_engine_rules, zen_table
from decisionloop.engine.engine import DecisionEngine
from decisionloop.ops.lookups import AS_OF
from decisionloop.rules.online import compile_online
from decisionloop.runtime import open_service

RESULTS = Path(__file__).resolve().parent / "results" / "peers.json"
console = ingest.console
Row = dict[str, Any]
Evaluate = Callable[[Row], list[int]]
TARGET_ZEN_RATIO = 50.0
ORDER = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def decision_rows(workload: decide.Workload, limit: int) -> tuple[DecisionEngine, list[Row]]:
    """The rows the engine's rules stage sees for the first ``limit`` live transactions (the
    service's engine after its state rebuild; other live events observed in order)."""
    service = open_service(workload.settings())
    try:
        engine = service.engine
        rows: list[Row] = []
        for obj in workload.live:
            event = engine.catalog.validate(obj)
            if event.type != decide.EVENT_TYPE:
                engine.observe(event)
                continue
            rows.append(decide.decision_row(engine, event))
            if len(rows) >= limit:
                break
    finally:
        service.close()
    return engine, rows


def peer_row(row: Row, engine: DecisionEngine) -> Row:
    """The row with the lookups, the hour and the analyst rules' ratios as plain inputs."""
    at = row[AS_OF]
    out = {k: v for k, v in row.items() if k not in (AS_OF, "occurred_at")}
    lookups = engine.lookups
    for entity, label in decide.LABELS:
        key = row.get(decide.ENTITY_KEYS[entity])
        out[f"x_label_{label}"] = lookups.has_label(entity, key, label, at)
    for name, column in decide.LISTS:
        out[f"x_list_{name}"] = lookups.in_list(name, row.get(column), at)
    out["x_hour"] = row["occurred_at"].hour
    out["x_drain"] = _ge(row.get("amount"), 0.7, row.get("balance_before"))
    out["x_inflow"] = _ge(row.get("amount"), 0.3, row.get("account.inbound_sum_24h"))
    return out


def _ge(value: float | None, share: float, other: float | None) -> bool:
    return value is not None and other is not None and value >= share * other


def holds(c: Comparison, row: Row) -> bool:
    value = row.get(c.name)
    if value is None:
        return False
    if c.op == "=":
        return bool(value == c.value)
    if c.op == "in":
        return value in c.value
    if c.op == "is":
        return value is True
    if c.op == "not":
        return value is False
    return bool(ORDER[c.op](value, c.value))


def naive_loop(rules: Sequence[list[list[Comparison]]]) -> Evaluate:
    def evaluate(row: Row) -> list[int]:
        fired = []
        for i, alternatives in enumerate(rules):
            for atoms in alternatives:
                if all(holds(c, row) for c in atoms):
                    fired.append(i)
                    break
        return fired

    return evaluate


def flatten(rules: Sequence[list[list[Comparison]]]) -> tuple[list[list[Comparison]], list[int]]:
    """One row (table row, rule-engine Rule) per alternative, with its rule's number."""
    flat, ids = [], []
    for i, alternatives in enumerate(rules):
        for atoms in alternatives:
            flat.append(atoms)
            ids.append(i)
    return flat, ids


def run_size(
    size: int,
    engine: DecisionEngine,
    rows: list[Row],
    peer_rows: list[Row],
    workload: decide.Workload,
    args: argparse.Namespace,
) -> dict[str, Any]:
    strategy = engine.strategies[decide.EVENT_TYPE]
    checked = [r.checked for r in strategy.rules[:size]]
    if any(c is None for c in checked):
        raise RuntimeError("a rule of the strategy has no checked form")
    started = time.perf_counter()
    online = compile_online([c for c in checked if c is not None])
    result: dict[str, Any] = {"rules": size, "compile_s": round(time.perf_counter() - started, 2)}
    ours_us, ours = per_event(online.evaluate, rows, repeats=5)
    result |= {"ours_us": round(ours_us, 2), "ours_events": len(rows)}
    result["hits_per_event"] = round(sum(len(h) for h in ours) / len(rows), 3)
    rules = workload.peer_rules[:size]
    few = peer_rows[: max(50, min(len(peer_rows), args.loop_budget // size))]
    naive_us, naive = per_event(naive_loop(rules), few, repeats=2, block=50)
    result |= {"naive_loop_us": round(naive_us, 2), "naive_loop_events": len(few)}
    result["naive_loop_agrees"] = agreement(ours, naive)
    flat, ids = flatten(rules)
    fields = sorted({c.name for atoms in flat for c in atoms})
    if peer("zen-engine"):
        started = time.perf_counter()
        zen = zen_table(flat, fields, ids)
        result["zen_compile_s"] = round(time.perf_counter() - started, 2)
        subset = peer_rows[: max(50, min(len(peer_rows), args.zen_budget // size))]
        zen_us, hits = per_event(zen, subset, repeats=2, block=50)
        result |= {"zen_us": round(zen_us, 2), "zen_events": len(subset)}
        result["zen_agrees"] = agreement(ours, hits)
    if peer("rule-engine"):
        subset = peer_rows[: max(20, min(len(peer_rows), args.rule_engine_budget // size))]
        re_us, hits = per_event(rule_engine_rules(flat, ids), subset, block=20)
        result |= {"rule_engine_us": round(re_us, 2), "rule_engine_events": len(subset)}
        result["rule_engine_agrees"] = agreement(ours, hits)
    for name in ("naive_loop", "zen", "rule_engine"):
        if f"{name}_us" in result:
            result[f"{name}_vs_ours"] = round(result[f"{name}_us"] / ours_us, 1)
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    table = Table(title="The decision workload's rules: µs per event (ratio to ours)")
    for name in ("rules", "ours", "naive loop", "zen-engine", "rule-engine", "hits/event", "agree"):
        table.add_column(name, justify="right")

    def cell(r: dict[str, Any], name: str) -> str:
        if f"{name}_us" not in r:
            return "-"
        return f"{r[f'{name}_us']:,.1f} ({r[f'{name}_vs_ours']:,.0f}x)"

    for r in results:
        agree = [k.removesuffix("_agrees") for k, v in r.items() if k.endswith("_agrees") and v < 1]
        table.add_row(
            f"{r['rules']:,}",
            f"{r['ours_us']:.1f}",
            cell(r, "naive_loop"),
            cell(r, "zen"),
            cell(r, "rule_engine"),
            f"{r['hits_per_event']:.2f}",
            "all" if not agree else "NOT " + ", ".join(agree),
        )
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small bank and fewer rows")
    p.add_argument("--sizes", default="100,1000,5000")
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--live-days", type=int, default=4)
    p.add_argument("--rows", type=int, default=4000, help="live transactions evaluated (ours)")
    p.add_argument("--loop-budget", type=int, default=2_000_000, help="rows x rules, naive loop")
    p.add_argument("--zen-budget", type=int, default=2_000_000, help="rows x rules, zen-engine")
    p.add_argument("--rule-engine-budget", type=int, default=300_000, help="rows x rules")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.customers, args.days, args.live_days, args.rows = 300, 12, 2, 500
        args.loop_budget = args.zen_budget = 500_000
        args.rule_engine_budget = 100_000
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    info = ingest.machine()
    root = Path(tempfile.mkdtemp(prefix="decisionloop-peers-"))
    try:
        workload = decide.build_workload(
            root, customers=args.customers, days=args.days, live_days=args.live_days,
            rules=max(sizes), trees=0, say=console.print,
        )  # fmt: skip
        engine, rows = decision_rows(workload, args.rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ids = [r.spec.id for r in engine.strategies[decide.EVENT_TYPE].rules]
    if ids != workload.rule_ids:
        raise RuntimeError("the strategy's rules are not in the order the peers' rules are")
    peer_rows = [peer_row(r, engine) for r in rows]
    read = {c.name for alternatives in workload.peer_rules for a in alternatives for c in a}
    for row in peer_rows:  # features of entities an event does not carry are absent: NULL
        for name in read - row.keys():
            row[name] = None
    load: dict[str, Any] = {}
    results = []
    with decide.others_cpu(load):
        for size in sizes:
            console.print(f"[bold]{size:,} rules[/] ...")
            results.append(run_size(size, engine, rows, peer_rows, workload, args))
    print_table(results)
    largest = results[-1]
    zen_ratio = largest.get("zen_vs_ours")
    met = zen_ratio is not None and zen_ratio >= TARGET_ZEN_RATIO and largest["zen_agrees"] == 1
    console.print(
        f"target ours ≥ {TARGET_ZEN_RATIO:.0f}x faster than zen-engine at "
        f"{largest['rules']:,} rules: {zen_ratio}x — {'met' if met else 'not met'}"
    )
    info.update(load)
    info["loadavg_end"] = os.getloadavg()
    document = {
        "benchmark": "peers",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "parameters": vars(args),
        "workload": workload.facts,
        "results": results,
        "target_zen_ratio": TARGET_ZEN_RATIO,
        "target_met": met,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2, default=str) + "\n")
    console.print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
