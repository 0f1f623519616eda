"""The whole decision, end to end (``python -m benchmarks.decide``).

The workload is the one a bank would run, built in a temporary folder for each run:

- **events**: the demo bank's stream (``demo/bank.py``), ending now: its history is imported
  into the service's DuckDB source layer; after it come ``--replay-days`` live days, of which
  in-process decides the first ``--live-days`` and the HTTP runs replay the transactions;
- **features**: the example project's velocity features plus more of the same kind, 50 names over
  4 entities (customer, account, device, terminal);
- **rules**: the example project's 7 analyst rules plus generated ones in the same style, 5,000 in
  all: thresholds on amounts and features at tail quantiles of the stream (two significant
  digits, as analysts write them), equality and IN on channel, direction and MCC, ``has_label``
  and ``in_list`` lookups, time of day;
- **risk labels and lists** in the operational store (customers of known fraud, mule accounts,
  compromised merchants ...; blocked IPs, high-risk MCCs ...), read by the rules;
- **a model**: LightGBM, 200 trees, trained on the history with ``fit_and_register`` (offline
  point-in-time features, fraud labels as the target) and attached to the strategy, active.

Measured **in-process** (the service's engine after ``open_service`` rebuilt its state, the heap
settled as ``decisionloop serve`` does): for each live transaction, validation (``catalog.parse``)
then ``engine.decide``; per stage from the decision's ``trace_us`` and in total, p50/p99/p99.9,
and decisions per second on one thread. Warm-up decisions are not counted; every measured
decision is checked (its event, an outcome of the strategy, the model scored). Encoding the
answer (``as_dict`` + orjson) is timed apart.

Measured **over HTTP** (``decisionloop serve`` as a subprocess on the project, the load generator
``benchmarks/loadgen.py`` in a second process, open loop, latency from the scheduled send time):
the floor first, ``/healthz`` on the same server stack at its maximum (closed loop), then
``/v1/decide`` closed loop and at fixed offered loads (fractions of its maximum, and 70% of the
floor), then ``/v1/decide/batch`` (100 events per request) the same way. The bodies are the
demo bank's live transactions as recorded (event id and event time), in event-time order: each
run replays its own consecutive slice, starting where the previous run stopped sending, so no
event is sent twice (a repeat would return the stored decision, a cheaper path) and the service's
event time only moves on. Event time and wall time are decoupled, as in a replay of history (the
velocity windows see the bank's real pace, however fast it is sent); with several connections the
arrival order differs from event order by at most the requests in flight, and the service's
``decisionloop_late_events_total`` (events behind its latest event time by more than the project's
``allowed_lateness``) is recorded after each run, with repeats and the outcome mix of the
decisions answered, to compare with the in-process mix. Only transactions are replayed: the
logins, device binds and other non-decided live events are not sent (in-process observes them),
so features counting them see the history only.

Output: tables on stdout and ``benchmarks/results/decide.json`` (machine, load average and other
processes' CPU included). Nothing is asserted: the targets are printed as met or not met.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import yaml
from rich.table import Table

from benchmarks import ingest
from benchmarks.rules import Comparison, _round
from decisionloop.demo.bank import BankConfig, DemoBank, generate
from decisionloop.domain.events import Event
from decisionloop.engine.engine import DecisionEngine
from decisionloop.ml.train import LightGBMEstimator, fit_and_register
from decisionloop.ml.training import training_frame
from decisionloop.ops.labels import LabelService, NewLabel
from decisionloop.ops.lists import ListService
from decisionloop.ops.lookups import AS_OF
from decisionloop.project.loader import load_project
from decisionloop.project.scaffold import init_project
from decisionloop.runtime import compile_engine, open_service, settle_heap
from decisionloop.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "decide.json"
console = ingest.console
Result = dict[str, Any]
SEED = 20260601
EVENT_TYPE = "transaction"
MODEL = "fraud_gbm"
STAGES = ("validate", "features", "rules", "model", "combine")
OUTCOMES = ("approve", "challenge", "review", "decline")  # the example strategy's, mildest first
TARGETS = {
    "in_process_p50_us": 300.0,
    "in_process_p99_us": 1000.0,
    "decide_share_of_floor": 0.5,
    "decide_p99_ms_at_70pct_floor": 10.0,
    "batch_decisions_per_s": 20_000.0,
}

# 35 more velocity features in the example project's style: with its 15, 50 names over customer,
# account, device and terminal (the four entities every transaction can carry features for).
EXTRA_FEATURES = """
features:
  - {name: amount_avg, entity: customer, aggregation: avg, field: amount, windows: [24h, 7d],
     event_types: [transaction]}
  - {name: amount_max, entity: customer, aggregation: max, field: amount, windows: [24h],
     event_types: [transaction]}
  - {name: credit_count, entity: customer, aggregation: count, windows: [24h],
     event_types: [transaction], filter: "direction = 'credit'"}
  - {name: atm_count, entity: customer, aggregation: count, windows: [24h],
     event_types: [transaction], filter: "channel = 'atm'"}
  - {name: instant_sum, entity: customer, aggregation: sum, field: amount, windows: [24h],
     event_types: [transaction], filter: "channel = 'instant_payment'"}
  - {name: seen_devices, entity: customer, aggregation: distinct_count, field: device_id,
     windows: [7d], event_types: [transaction, login]}
  - {name: logins, entity: customer, aggregation: count, windows: [1h], event_types: [login]}
  - {name: ips, entity: customer, aggregation: distinct_count, field: ip, windows: [24h],
     event_types: [login, transaction]}
  - {name: txn_count, entity: account, aggregation: count, windows: [1h, 24h],
     event_types: [transaction]}
  - {name: amount_sum, entity: account, aggregation: sum, field: amount, windows: [1h, 24h, 7d],
     event_types: [transaction]}
  - {name: devices, entity: account, aggregation: distinct_count, field: device_id,
     windows: [24h], event_types: [transaction]}
  - {name: transfer_count, entity: account, aggregation: count, windows: [1h, 24h],
     event_types: [transaction], filter: "channel in ('transfer', 'instant_payment')"}
  - {name: amount_max, entity: account, aggregation: max, field: amount, windows: [24h],
     event_types: [transaction]}
  - {name: debit_count, entity: account, aggregation: count, windows: [10m],
     event_types: [transaction], filter: "direction = 'debit'"}
  - {name: credit_sum, entity: account, aggregation: sum, field: amount, windows: [7d],
     event_types: [transaction], filter: "direction = 'credit'"}
  - {name: txn_count, entity: device, aggregation: count, windows: [10m, 1h, 24h],
     event_types: [transaction]}
  - {name: seen_customers, entity: device, aggregation: distinct_count, field: customer_id,
     windows: [1h, 24h, 7d], event_types: [transaction, login]}
  - {name: accounts, entity: device, aggregation: distinct_count, field: account_id,
     windows: [24h], event_types: [transaction]}
  - {name: amount_sum, entity: device, aggregation: sum, field: amount, windows: [24h],
     event_types: [transaction]}
  - {name: logins, entity: device, aggregation: count, windows: [1h], event_types: [login]}
  - {name: failed_logins, entity: device, aggregation: count, windows: [1h],
     event_types: [login], filter: not success}
  - {name: amount_sum, entity: terminal, aggregation: sum, field: amount, windows: [1h, 24h],
     event_types: [transaction]}
  - {name: customers, entity: terminal, aggregation: distinct_count, field: customer_id,
     windows: [24h], event_types: [transaction]}
  - {name: txn_count, entity: terminal, aggregation: count, windows: [10m, 24h],
     event_types: [transaction]}
"""

# Labels and lists the generated rules read: (entity, label) and (list, field).
LABELS = (
    ("customer", "fraud_victim"),
    ("account", "mule_suspect"),
    ("merchant", "compromised"),
    ("device", "emulator"),
    ("payee", "scam_payee"),
)
LISTS = (
    ("blocked_ips", "ip"),
    ("high_risk_mcc", "mcc"),
    ("watch_merchants", "merchant_id"),
    ("mule_accounts", "counterparty_account_id"),
)
ENTITY_KEYS = {
    "customer": "customer_id",
    "account": "account_id",
    "merchant": "merchant_id",
    "device": "device_id",
    "payee": "payee_id",
}

# The analyst rules of the example project (rules/fraud.yaml) for the peers: alternatives of
# comparisons; the two ratio atoms and the hour are inputs computed per event (peer_row).
C = Comparison
RAILS = ("instant_payment", "transfer")
ANALYST_PEER: list[list[list[Comparison]]] = [
    [[C("channel", "=", "card_online"), C("amount", "<", 5),
      C("customer.card_online_count_10m", ">=", 4), C("customer.distinct_merchants_1h", ">=", 3)]],
    [[C("direction", "=", "debit"), C("channel", "in", RAILS), C("x_drain", "is", None),
      C(signal, ">=", 1), C("customer.payee_adds_24h", ">=", 1)]
     for signal in ("customer.device_binds_24h", "customer.password_changes_24h")],
    [[C("direction", "=", "debit"), C("channel", "in", RAILS), C("x_hour", "<", 5),
      C("amount", ">", 1000)]],
    [[C("direction", "=", "debit"),
      C("channel", "in", ("atm", "card_online", "instant_payment", "transfer")),
      C("account.inbound_senders_7d", ">=", 5), C("account.inbound_senders_24h", ">=", 2),
      C("x_inflow", "is", None)]],
    [[C("channel", "=", "instant_payment"), C("direction", "=", "debit"), C("amount", ">", 2000),
      C("customer.payee_adds_24h", ">=", 1)]],
    [[C("direction", "=", "debit"), C("customer.debit_count_1h", ">=", 8)]],
    [[C("direction", "=", "debit"), C("customer.failed_logins_1h", ">=", 2)]],
]  # fmt: skip


@dataclass
class Workload:
    root: Path  # project/, state/, replay.jsonl
    history_end: datetime
    live: list[dict[str, Any]]  # the live events decided in-process (the first live days), in order
    rule_ids: list[str]  # in the strategy's order: the analyst rules, then the generated
    peer_rules: list[list[list[Comparison]]]  # the same rules for peers (alternatives)
    facts: Result = field(default_factory=dict)  # what was built, for the JSON

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def replay_file(self) -> Path:
        """Every live transaction (the replay days), as recorded, in event-time order: the
        bodies of the HTTP runs, each run its own consecutive slice."""
        return self.root / "replay.jsonl"

    def settings(self) -> Settings:
        return load_settings(project_dir=self.project, data_dir=self.root / "state")


# -- building the workload ----------------------------------------------------------------------
CASES_WITHOUT_MONITORING = "default_queue: fraud\nalert_outcomes: [review]\n"


def build_workload(
    root: Path,
    *,
    customers: int = 1000,
    days: int = 30,
    live_days: int = 3,
    replay_days: int | None = None,
    rules: int = 5000,
    trees: int = 200,
    seed: int = SEED,
    say: Callable[[str], None] = lambda _: None,
) -> Workload:
    """Everything in ``root``: the project, its state (history, labels, lists), a model, and the
    live segment to replay over HTTP (``replay.jsonl``).

    The bank's stream ends now: ``days - live_days`` days of history, then ``replay_days``
    (at least ``live_days``) live days, all in the past, so that the service takes every live
    event at its recorded time (it refuses events dated ahead of its clock). In-process decides
    the first ``live_days`` of them; the HTTP runs replay the live transactions in slices."""
    started = time.perf_counter()
    replay_days = max(replay_days or live_days, live_days)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    history_end = end - timedelta(days=replay_days)
    start = history_end - timedelta(days=days - live_days)
    config = BankConfig(
        seed=seed % 2**31, customers=customers, days=days - live_days + replay_days, start=start
    )
    bank = generate(config)
    cut, live_end = history_end.isoformat(), (history_end + timedelta(days=live_days)).isoformat()
    history = [e for e in bank.events if e["occurred_at"] < cut]
    live = [e for e in bank.events if cut <= e["occurred_at"] < live_end]
    replay = [orjson.dumps(e) for e in bank.events if e["occurred_at"] >= cut and
              e["type"] == EVENT_TYPE]  # fmt: skip
    (root / "replay.jsonl").write_bytes(b"\n".join(replay) + b"\n")
    say(
        f"demo bank: {len(bank.events):,} events ({len(history):,} history, {len(live):,} live"
        f" in {live_days} days; {len(replay):,} live transactions in {replay_days} days to replay)"
    )
    project = root / "project"
    init_project(project)
    (project / "features" / "more.yaml").write_text(EXTRA_FEATURES)
    # No scheduled monitoring: it follows event time, and the replay runs 90 days of it in
    # minutes, so the service would spend the runs monitoring rather than deciding.
    (project / "cases.yaml").write_text(CASES_WITHOUT_MONITORING)
    settings = load_settings(project_dir=project, data_dir=root / "state")
    facts: Result = {"events": len(bank.events), "history_events": len(history)}
    facts["live_events"] = len(live)
    facts["live_transactions"] = sum(e["type"] == EVENT_TYPE for e in live)
    facts["replay_days"] = replay_days
    facts["replay_transactions"] = len(replay)
    facts["history_end"] = cut
    facts["stream_end"] = bank.events[-1]["occurred_at"] if bank.events else None
    del replay

    service = open_service(settings)
    try:
        engine = service.engine
        facts["features"] = sum(len(f.names) for f in engine.features.features)
        facts["feature_entities"] = sorted({f.spec.entity for f in engine.features.features})
        catalog = engine.catalog
        futures = []
        for at in range(0, len(history), 5000):
            future, _ = service.ingest_valid([catalog.validate(e) for e in history[at : at + 5000]])
            futures.append(future)
        for future in futures:
            future.result()
        assert service.ops is not None
        facts.update(_labels_and_lists(service.ops, engine, bank, history, random.Random(seed)))
    finally:
        service.close()
    say(f"history imported, labels and lists stored ({time.perf_counter() - started:.1f} s)")

    rows = _feature_rows(settings, history, days=min(7, days - live_days))
    generated = generate_rules(rules - len(ANALYST_PEER), rows, random.Random(seed))
    _write_rules(project, generated)
    analyst = yaml.safe_load((project / "rules" / "fraud.yaml").read_text())["rules"]
    ids = [r["id"] for r in analyst]
    ids += [g.rule_id for g in generated]
    peer_rules = [*ANALYST_PEER, *([g.atoms] for g in generated)]
    facts["rules"] = len(ids)
    say(f"{len(ids):,} rules written ({time.perf_counter() - started:.1f} s)")

    if trees > 0:
        facts["model"] = _train(settings, history_end, trees)
        say(f"model trained and attached ({time.perf_counter() - started:.1f} s)")
    facts["build_s"] = round(time.perf_counter() - started, 1)
    return Workload(root, history_end, live, ids, peer_rules, facts)


def _labels_and_lists(
    store: Any, engine: DecisionEngine, bank: DemoBank, history: list[dict[str, Any]], rng: Any
) -> Result:
    """Labels on entities of the history (fraud's victims and mules from the ground truth, a
    sample of merchants, devices, payees) and list items (IPs, MCCs, merchants, mule accounts)."""
    seen: dict[str, set[str]] = {}
    for event in history:
        for name in ("customer_id", "account_id", "merchant_id", "device_id", "payee_id", "ip",
                     "mcc", "counterparty_account_id"):  # fmt: skip
            if (value := event.get(name)) is not None:
                seen.setdefault(name, set()).add(str(value))
    cut = history[-1]["occurred_at"]
    truth = [t for t in bank.truth if t["occurred_at"] < cut]
    mules = sorted({t["account_id"] for t in truth if t["typology"] == "money_mule"})

    def sample(name: str, share: float) -> list[str]:
        values = sorted(seen.get(name, ()))
        return rng.sample(values, max(1, int(len(values) * share))) if values else []

    chosen = {
        "fraud_victim": sorted({t["customer_id"] for t in truth}),
        "mule_suspect": mules,
        "compromised": sample("merchant_id", 0.02),
        "emulator": sample("device_id", 0.01),
        "scam_payee": sample("payee_id", 0.02),
    }
    labels = LabelService(store, engine.lookups, ENTITY_KEYS)
    counts: Counter[str] = Counter()
    for entity, label in LABELS:
        for entity_id in chosen[label]:
            labels.add(entity, entity_id, NewLabel(label, "benchmark", "bench", "analyst"))
            counts[f"label:{label}"] += 1
    items = {
        "blocked_ips": sample("ip", 0.01),
        "high_risk_mcc": sample("mcc", 0.1),
        "watch_merchants": sample("merchant_id", 0.01),
        "mule_accounts": mules or sample("account_id", 0.005),
    }
    lists = ListService(store, engine.lookups)
    for name, _ in LISTS:
        lists.create(name, "value", "benchmark list", "bench")
        for value in items[name]:
            lists.add(name, value, "bench", "benchmark")
            counts[f"list:{name}"] += 1
    return {"labels_and_items": dict(sorted(counts.items()))}


def _feature_rows(settings: Settings, history: list[dict[str, Any]], days: int) -> list[Result]:
    """The decision rows (fields and feature values) of the last ``days`` of history, from a
    fresh engine fed the whole history: the distribution the generated thresholds come from."""
    engine = compile_engine(settings)
    since = (datetime.fromisoformat(history[-1]["occurred_at"]) - timedelta(days=days)).isoformat()
    rows = []
    for obj in history:
        event = engine.catalog.validate(obj)
        if event.type == EVENT_TYPE and obj["occurred_at"] >= since:
            rows.append(decision_row(engine, event))
        else:
            engine.observe(event)
    return rows


def decision_row(engine: DecisionEngine, event: Event) -> Result:
    """What ``DecisionEngine.decide`` evaluates rules on (observing the event's features)."""
    values = engine.features.observe(event)
    row: Result = {**event.values, "occurred_at": event.occurred_at, **values}
    row[AS_OF] = datetime.now(UTC)
    return row


@dataclass(frozen=True)
class GeneratedRule:
    rule_id: str
    when: str
    atoms: list[Comparison]  # the same predicate for peers
    outcome: str
    score: int
    shadow: bool


def generate_rules(count: int, rows: list[Result], rng: random.Random) -> list[GeneratedRule]:
    """Conjunctions of 3-4 atoms in the analysts' style (see the module doc): two thresholds at a
    tail of a number's distribution, then thresholds, categories, lookups or the hour."""
    features = {k for r in rows for k in r if "." in k and isinstance(r[k], int | float)}
    numbers = ["amount", "balance_before", *sorted(features)]
    quantiles: dict[str, list[float]] = {}
    for name in numbers:
        present = sorted(r[name] for r in rows if isinstance(r.get(name), int | float))
        if len(present) >= 20:
            picks = [present[int(q / 1000 * (len(present) - 1))] for q in range(1001)]
            quantiles[name] = picks
    mccs = Counter(r["mcc"] for r in rows if r.get("mcc"))
    categories = {
        "channel": (["card_present", "card_online", "transfer", "instant_payment", "atm"],
                    [40, 25, 20, 10, 5]),
        "direction": (["debit", "credit"], [80, 20]),
        "mcc": ([m for m, _ in mccs.most_common(30)], [n for _, n in mccs.most_common(30)]),
    }  # fmt: skip
    # Upper tails where the 99.9th percentile is above zero; lower tails where the 10th is
    # (a count's lower tail is mostly 0: "<= 0" would hold for most events).
    names = sorted(n for n, q in quantiles.items() if q[999] > 0)
    lows = sorted(n for n, q in quantiles.items() if q[100] > 0)
    out = []
    kinds = ("upper", "lower", "category", "label", "list", "hour")
    weights = (20, 4, 40, 14, 10, 12)
    for i in range(count):
        atoms: list[tuple[str, Comparison]] = []
        used: set[str] = set()
        for k in range(rng.randint(3, 4)):
            # Two tail thresholds first: what keeps an analyst's rule to a sliver of traffic.
            kind = (
                rng.choice(("upper", "upper", "lower")) if k < 2 else rng.choices(kinds, weights)[0]
            )
            text, atom, key = _atom(kind, rng, lows if kind == "lower" else names, quantiles,
                                    categories)  # fmt: skip
            if key in used:
                continue
            used.add(key)
            atoms.append((text, atom))
        if len(atoms) < 3:  # a repeated field: one more upper-tail threshold
            text, atom, _ = _atom("upper", rng, [n for n in names if n not in used], quantiles, {})
            atoms.append((text, atom))
        outcome = rng.choices(["challenge", "review", "decline"], [40, 40, 20])[0]
        out.append(
            GeneratedRule(
                rule_id=f"gen_{i:04d}",
                when=" and ".join(t for t, _ in atoms),
                atoms=[a for _, a in atoms],
                outcome=outcome,
                score=rng.choice([5, 10, 15, 20, 25, 30, 40, 50]),
                shadow=rng.random() < 0.05,
            )
        )
    return out


def _atom(
    kind: str,
    rng: random.Random,
    names: list[str],
    quantiles: dict[str, list[float]],
    categories: dict[str, tuple[list[str], list[int]]],
) -> tuple[str, Comparison, str]:
    """(rule text, the comparison for peers, what it reads)."""
    if kind in ("upper", "lower"):
        name = rng.choice(names)
        q = quantiles[name]
        if kind == "upper":  # 95th to 99.9th percentile (the first above zero): large, many, fast
            at = rng.choice([950, 980, 990, 995, 999])
            at = next(i for i in range(at, 1000) if q[i] > 0)
            value = _round(q[at])
            op = rng.choice([">", ">="])
        else:  # 1st to 10th: small balances, short gaps
            value = _round(q[rng.choice([10, 20, 50, 100])])
            op = "<=" if value == 0 else "<"
        return f"{name} {op} {value}", C(name, op, value), name
    if kind == "category":
        name = rng.choice(sorted(categories))
        values, weights = categories[name]
        if rng.random() < 0.7:
            chosen = rng.choices(values, weights)[0]
            return f"{name} = '{chosen}'", C(name, "=", chosen), name
        picked = tuple(sorted(set(rng.choices(values, weights, k=3))))
        listed = ", ".join(f"'{v}'" for v in picked)
        return f"{name} in ({listed})", C(name, "in", picked), name
    if kind == "label":
        entity, label = rng.choice(LABELS)
        return f"has_label({entity}, '{label}')", C(f"x_label_{label}", "is", None), label
    if kind == "list":
        name, column = rng.choice(LISTS)
        return f"in_list('{name}', {column})", C(f"x_list_{name}", "is", None), name
    if rng.random() < 0.6:  # the night
        hour = rng.randint(1, 6)
        return f"hour(occurred_at) < {hour}", C("x_hour", "<", hour), "hour"
    hour = rng.randint(21, 23)
    return f"hour(occurred_at) >= {hour}", C("x_hour", ">=", hour), "hour"


def _write_rules(project: Path, generated: list[GeneratedRule]) -> None:
    document = {
        "name": "generated",
        "description": "Generated in the analysts' style for the benchmark",
        "rules": [
            {
                "id": g.rule_id,
                "description": f"generated rule {g.rule_id}",
                "owner": "benchmark",
                "when": g.when,
                "outcome": g.outcome,
                "score": g.score,
                **({"status": "shadow"} if g.shadow else {}),
            }
            for g in generated
        ],
    }
    (project / "rules" / "generated.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    strategy = project / "strategies" / f"{EVENT_TYPE}.yaml"
    text = strategy.read_text().replace("rule_sets: [fraud]", "rule_sets: [fraud, generated]")
    strategy.write_text(text)


def _train(settings: Settings, history_end: datetime, trees: int) -> Result:
    """Train on the imported history (labels known by its end), register, attach active."""
    project = load_project(settings.project_dir)
    source = settings.source_path()
    assert source is not None
    with duckdb.connect(str(source), read_only=True) as connection:
        connection.execute("SET enable_progress_bar = false")
        frame = training_frame(connection, project, EVENT_TYPE, as_of=history_end)
    result = fit_and_register(frame, project, MODEL, LightGBMEstimator(trees=trees))
    strategy = settings.project_dir / "strategies" / f"{EVENT_TYPE}.yaml"
    attach = {
        "models": [
            {
                "name": MODEL,
                "version": result.model.version,
                "status": "active",
                "contributions": 3,
                "thresholds": [
                    {"score": 0.8, "outcome": "review"},
                    {"score": 0.95, "outcome": "decline"},
                ],
            }
        ]
    }
    strategy.write_text(strategy.read_text() + yaml.safe_dump(attach, sort_keys=False))
    held = result.metrics["validation"]
    return {
        "name": MODEL,
        "trees": trees,
        "inputs": len(frame.feature_names),
        "training_rows": result.metrics["training"]["rows"],
        "training_positives": result.metrics["training"]["positives"],
        "validation_roc_auc": held.get("roc_auc"),
        "validation_average_precision": held.get("average_precision"),
    }


# -- in-process ---------------------------------------------------------------------------------
def percentiles(samples: Sequence[float]) -> Result:
    ordered = sorted(samples)
    if not ordered:
        return {"p50": None, "p99": None, "p999": None, "mean": None, "max": None}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)

    return {
        "p50": at(0.5),
        "p99": at(0.99),
        "p999": at(0.999),
        "mean": round(sum(ordered) / len(ordered), 1),
        "max": round(ordered[-1], 1),
    }


@contextlib.contextmanager
def others_cpu(out: Result) -> Iterator[None]:
    """Cores used by every other process while the block ran (machine busy minus this one)."""
    wall, busy, own = time.monotonic(), ingest.busy_seconds(), time.process_time()
    out["loadavg_before"] = os.getloadavg()
    yield
    elapsed = time.monotonic() - wall
    others = ingest.busy_seconds() - busy - (time.process_time() - own)
    out["other_processes_cores"] = round(max(others, 0.0) / elapsed, 2)
    out["loadavg_after"] = os.getloadavg()


def in_process(workload: Workload, warmup: int) -> Result:
    """Decide the live stream in order; the first ``warmup`` transactions are not measured."""
    service = open_service(workload.settings())
    try:
        engine = service.engine
        settle_heap()  # as `decisionloop serve` does before serving
        strategy = engine.strategies[EVENT_TYPE]
        outcomes = set(strategy.spec.outcomes)
        parse = engine.catalog.parse
        clock = time.perf_counter
        totals: list[float] = []
        stages: dict[str, list[float]] = {s: [] for s in STAGES}
        encode: list[float] = []
        checks: Counter[str] = Counter()
        seen = 0
        out: Result = {}
        with others_cpu(out):
            started = clock()
            for obj in workload.live:
                if obj["type"] != EVENT_TYPE:
                    other, _ = parse(obj, "body")
                    if other is not None:
                        engine.observe(other)
                    continue
                t0 = clock()
                event, problems = parse(obj, "body")
                t1 = clock()
                if event is None:
                    raise RuntimeError(f"invalid live event: {problems}")
                decision = engine.decide(event, (t1 - t0) * 1e6)
                t2 = clock()
                body = orjson.dumps(decision.as_dict())
                t3 = clock()
                seen += 1
                if seen <= warmup:
                    continue
                totals.append((t2 - t0) * 1e6)
                encode.append((t3 - t2) * 1e6)
                for stage in STAGES:
                    stages[stage].append(decision.trace_us.get(stage, math.nan))
                _check(decision, event, outcomes, body, checks, strategy.models is not None)
            wall = clock() - started
    finally:
        service.close()
    if not totals:
        raise RuntimeError("no decision was measured: make --live-days or the bank larger")
    mean_us = sum(totals) / len(totals)
    return {
        **out,
        "decisions": len(totals),
        "warmup_decisions": min(seen, warmup),
        "total_us": percentiles(totals),
        "stages_us": {
            s: percentiles([v for v in vs if not math.isnan(v)]) for s, vs in stages.items()
        },
        "encode_us": percentiles(encode),
        "decisions_per_s": round(1e6 / mean_us, 1),
        "stream_wall_s": round(wall, 2),
        "checks": dict(checks),
        "outcome_mix": outcome_mix(
            {k.split(":", 1)[1]: v for k, v in checks.items() if k.startswith("outcome:")}
        ),
    }


def _check(
    decision: Any, event: Event, outcomes: set[str], body: bytes, checks: Counter[str], model: bool
) -> None:
    """Each measured call returned a real decision: its event, a known outcome, reasons, the
    model scored (not degraded, or only over its time budget: counted) when one is attached,
    an answer that encodes."""
    if decision.event_id != event.event_id or decision.outcome not in outcomes or not body:
        raise RuntimeError(f"not a decision for {event.event_id}: {decision}")
    checks[f"outcome:{decision.outcome}"] += 1
    rules = sum(1 for r in decision.reasons if r.kind == "rule")
    checks["rules_fired"] += rules
    checks["with_a_rule_fired"] += rules > 0
    if model:
        models = [r for r in decision.reasons if r.kind == "model"]
        scored = [r for r in models if not r.values.get("degraded")]
        if not scored:
            # Over its time budget (a busy machine): measured, counted, decided rules-only.
            if models and str(models[0].values.get("error", "")).startswith("timed out"):
                checks["model_timed_out"] += 1
                return
            raise RuntimeError(f"the model did not score {event.event_id}: {decision.reasons}")
        checks[f"model_form:{scored[0].values.get('form')}"] += 1
        checks[f"model_outcome:{scored[0].outcome}"] += 1


# -- over HTTP ----------------------------------------------------------------------------------
def drain(port: int, limit_s: float = 30.0) -> None:
    """After an overloaded run: wait until /healthz answers promptly again."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        started = time.monotonic()
        with contextlib.suppress(OSError):
            ingest.http_get(port, "/healthz")
            if time.monotonic() - started < 0.02:
                return
        time.sleep(0.5)


def service_counters(port: int) -> Result:
    """Late events, repeats and decisions by outcome so far, from the service's /metrics."""
    found: Result = {"late_events": 0, "duplicates": 0, "outcomes": Counter()}
    for line in ingest.http_get(port, "/metrics").decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == "decisionloop_late_events_total":
            found["late_events"] = int(float(value))
        elif name == "decisionloop_duplicate_events_total":
            found["duplicates"] = int(float(value))
        elif name.startswith("decisionloop_decisions_total{") and 'outcome="' in name:
            outcome = name.split('outcome="', 1)[1].split('"', 1)[0]
            found["outcomes"][outcome] += int(float(value))
    return found


def outcome_mix(counts: dict[str, int]) -> Result:
    """Shares of each outcome (the strategy's four first), rounded to 0.1%."""
    total = sum(counts.values())
    names = [*OUTCOMES, *sorted(set(counts) - set(OUTCOMES))]
    return {n: round(counts.get(n, 0) / total, 4) if total else None for n in names}


def over_http(workload: Workload, args: argparse.Namespace) -> tuple[list[Result], Result]:
    """The runs against one service; each replays its own consecutive slice of the live
    transactions (``Workload.replay_file``), at their recorded event times: the next run starts
    where the last one stopped sending, so no event is sent twice and event time only moves on.
    A closed-loop run (its length unknown beforehand) may use at most a share of what is left."""
    events = workload.replay_file
    available = workload.facts["replay_transactions"]
    timing = {"warmup": args.warmup, "duration": args.duration, "connections": args.connections}
    runs: list[Result] = []
    cursor = 0  # the first transaction of the next slice

    def run(label: str, scenario: str, rate: float, share: float = 1.0, **extra: Any) -> Result:
        nonlocal cursor
        if scenario != "healthz":
            extra.update(events=events, offset=cursor)
            if not rate:  # closed loop: bounded, so that the later runs have their slices
                per = extra.get("batch_size", 1)
                extra["max_requests"] = max(1, int((available - cursor) * share) // per)
        before = service_counters(port)
        result = ingest.loadgen(port, pid, label, scenario=scenario, rate=round(rate, 1),
                                **timing, **extra)  # fmt: skip
        runs.append(result)
        if result["errors"] or (rate and result["achieved_rps"] < 0.97 * rate):
            drain(port)
        after = service_counters(port)  # after the drain: a backlog decided late counts too
        result["late_events"] = after["late_events"] - before["late_events"]
        result["late_events_total"] = after["late_events"]
        result["duplicate_events"] = after["duplicates"] - before["duplicates"]
        replay = result.get("replay")
        if replay is not None:
            cursor += replay["events_sent"]
            result["outcome_mix"] = outcome_mix(result.get("outcomes", {}))
            result["server_outcomes"] = dict(after["outcomes"] - before["outcomes"])
            if replay["exhausted"] or replay["short"]:
                console.print(
                    f"  [yellow]warning[/]: the live segment ran out for this run ({replay});"
                    " give --replay-days more days",
                    highlight=False,
                )
        if result["late_events"] or result["duplicate_events"]:
            console.print(
                f"  [yellow]note[/]: {result['late_events']} late, "
                f"{result['duplicate_events']} repeated events in this run",
                highlight=False,
            )
        return result

    with ingest.service(workload.root, None, workload.project) as (port, pid):
        console.print(
            f"[bold]service[/] pid {pid} on 127.0.0.1:{port}; {available:,} live transactions"
            " to replay at their recorded times, each run its own slice",
            highlight=False,
        )
        floor = run("healthz max", "healthz", 0)["achieved_rps"]
        decide_max = run("decide max", "decide", 0, share=0.25)["achieved_rps"]
        at_70 = 0.7 * floor
        rates = sorted(
            {round(decide_max * f, 1) for f in args.decide_fractions} | {round(at_70, 1)}
        )
        fixed: dict[float, Result] = {}
        for rate in rates:
            fixed[rate] = run("decide fixed", "decide", rate)
        size = args.batch_size
        batch_max = run("batch max", "batch", 0, share=0.5, batch_size=size)
        for share in args.batch_fractions:
            run("batch fixed", "batch", batch_max["achieved_rps"] * share, batch_size=size)
        final = service_counters(port)
    target_run = fixed[round(at_70, 1)]
    batch_best = max(
        (r for r in runs if r["scenario"] == "batch" and r["errors"] == 0),
        key=lambda r: r["events_per_s"],
        default=batch_max,
    )
    replayed = [r for r in runs if "replay" in r]
    summary = {
        "floor_healthz_max_rps": floor,
        "decide_max_rps": decide_max,
        "decide_share_of_floor": round(decide_max / floor, 3) if floor else None,
        "decide_at_70pct_floor_offered_rps": round(at_70, 1),
        "decide_at_70pct_floor_achieved_rps": target_run["achieved_rps"],
        "decide_at_70pct_floor_p99_ms": target_run["latency_ms"]["p99"],
        "decide_at_70pct_floor_errors": target_run["errors"],
        "batch_max_decisions_per_s": batch_max["events_per_s"],
        "batch_best_errorless_decisions_per_s": batch_best["events_per_s"],
        "replay_transactions": available,
        "replay_transactions_sent": cursor,
        "replay_runs_short_of_events": sum(
            bool(r["replay"]["exhausted"] or r["replay"]["short"]) for r in replayed
        ),
        "late_events_total": final["late_events"],
        "duplicate_events_total": final["duplicates"],
        "outcome_mix_all_runs": outcome_mix(final["outcomes"]),
    }
    return runs, summary


# -- report -------------------------------------------------------------------------------------
def targets(in_proc: Result | None, http: Result | None) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    if in_proc is not None:
        out["in_process_p50_le_300us"] = in_proc["total_us"]["p50"] <= TARGETS["in_process_p50_us"]
        out["in_process_p99_le_1ms"] = in_proc["total_us"]["p99"] <= TARGETS["in_process_p99_us"]
    if http is not None:
        share = http["decide_share_of_floor"]
        out["decide_ge_50pct_of_floor"] = share is not None and share >= 0.5
        p99 = http["decide_at_70pct_floor_p99_ms"]
        out["decide_p99_le_10ms_at_70pct_floor"] = (
            p99 is not None
            and p99 <= TARGETS["decide_p99_ms_at_70pct_floor"]
            and http["decide_at_70pct_floor_errors"] == 0
        )
        best = http["batch_best_errorless_decisions_per_s"]
        out["batch_ge_20000_decisions_per_s"] = best >= TARGETS["batch_decisions_per_s"]
    return out


def print_in_process(result: Result) -> None:
    table = Table(title=f"in-process, µs per decision ({result['decisions']:,} decisions)")
    for name in ("stage", "p50", "p99", "p99.9", "mean", "max"):
        table.add_column(name, justify="left" if name == "stage" else "right")
    rows = [*((s, result["stages_us"][s]) for s in STAGES), ("total", result["total_us"])]
    rows.append(("(encode answer)", result["encode_us"]))
    for name, p in rows:
        table.add_row(name, *(str(p[k]) for k in ("p50", "p99", "p999", "mean", "max")))
    console.print(table)
    console.print(
        f"{result['decisions_per_s']:,.0f} decisions/s on one thread (1 / mean total); "
        f"other processes used {result['other_processes_cores']} cores meanwhile; "
        f"checks: {result['checks']}",
        highlight=False,
    )


def print_outcomes(in_proc: Result, runs: list[Result]) -> None:
    """The outcome mix of the HTTP runs next to the in-process one: the same kind of workload."""
    table = Table(title="outcome mix of the decisions: in-process and each HTTP run's slice")
    columns = ("run", "decisions", *OUTCOMES, "late", "repeats", "slice", "event time")
    for name in columns:
        table.add_column(name, justify="left" if name in ("run", "event time") else "right")

    def shares(mix: Result) -> list[str]:
        return [f"{mix[o]:.1%}" if mix.get(o) is not None else "-" for o in OUTCOMES]

    checks = in_proc["checks"]
    decided = sum(v for k, v in checks.items() if k.startswith("outcome:"))
    table.add_row("in-process", f"{decided:,}", *shares(in_proc["outcome_mix"]), "", "", "", "")
    for r in runs:
        replay = r.get("replay")
        if replay is None:
            continue
        rate = "closed" if r["offered_rps"] is None else f"{r['offered_rps']:g}/s"
        first, last = replay["first_occurred_at"] or "", replay["last_occurred_at"] or ""
        table.add_row(
            f"{r['label']} {rate}",
            f"{sum(r.get('outcomes', {}).values()):,}",
            *shares(r["outcome_mix"]),
            str(r["late_events"]),
            str(r["duplicate_events"]),
            f"{replay['first']:,}+{replay['events_sent']:,}",
            f"{first[:16]} .. {last[5:16]}",
        )
    console.print(table)
    console.print(
        "decisions: answered to the load generator (warm-up included); late: events behind the"
        " service's latest event time by more than allowed_lateness (its /metrics); repeats:"
        " event ids already stored (0: no event sent twice); slice: first transaction + sent.",
        highlight=False,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",") if x.strip()]

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="a short smoke run (small bank, short runs)"
    )
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument(
        "--live-days", type=int, default=4, help="live days decided in-process (after history)"
    )
    p.add_argument(
        "--replay-days",
        type=int,
        default=None,
        help="live days replayed over HTTP, each run its own slice (default: 90, --quick 45)",
    )
    p.add_argument("--rules", type=int, default=5000)
    p.add_argument("--trees", type=int, default=200, help="0: no model")
    p.add_argument("--warmup-decisions", type=int, default=500)
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--warmup", type=float, default=2.0, help="HTTP: seconds before each run")
    p.add_argument("--duration", type=float, default=10.0, help="HTTP: measured seconds per run")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument(
        "--decide-fractions",
        type=floats,
        default=floats("0.25,0.5,0.75,0.9"),
        help="offered /v1/decide loads as fractions of its closed-loop maximum",
    )
    p.add_argument("--batch-fractions", type=floats, default=floats("0.5,0.8"))
    p.add_argument("--keep", type=Path, help="build the workload here and keep it")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.customers, args.days, args.live_days = min(args.customers, 300), min(args.days, 12), 2
        args.warmup, args.duration, args.warmup_decisions = 1.0, 3.0, 100
        args.decide_fractions, args.batch_fractions = [0.5], [0.5]
    if args.replay_days is None:
        args.replay_days = 45 if args.quick else 90
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    info = ingest.machine()
    if info["background_cores_before"] > 0.25:
        console.print(f"[yellow]warning[/]: {info['background_cores_before']} cores busy already")
    root = args.keep or Path(tempfile.mkdtemp(prefix="decisionloop-decide-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        workload = build_workload(
            root, customers=args.customers, days=args.days, live_days=args.live_days,
            replay_days=args.replay_days, rules=args.rules, trees=args.trees, say=console.print,
        )  # fmt: skip
        gc.collect()
        in_proc = in_process(workload, args.warmup_decisions)
        print_in_process(in_proc)
        runs: list[Result] = []
        http: Result | None = None
        if not args.skip_http:
            runs, http = over_http(workload, args)
            ingest.print_table(runs)
            print_outcomes(in_proc, runs)
            for key, value in http.items():
                console.print(f"{key}: [bold]{value}[/]")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    met = targets(in_proc, http)
    for name, ok in met.items():
        console.print(f"target {name}: {'[green]met' if ok else '[red]not met'}[/]")
    info["loadavg_end"] = os.getloadavg()
    neighbours = [r["cpu"]["other_processes_cores"] for r in runs if "cpu" in r]
    if neighbours:
        info["http_other_processes_cores_mean"] = round(sum(neighbours) / len(neighbours), 2)
    document = {
        "benchmark": "decide",
        "machine": info,
        "parameters": vars(args),
        "workload": workload.facts,
        "in_process": in_proc,
        "http": {"summary": http, "runs": runs} if http else None,
        "targets": TARGETS,
        "targets_met": met,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2, default=str) + "\n")
    console.print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
