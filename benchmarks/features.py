"""Feature engine benchmark (``python -m benchmarks.features``).

Online: update+read per event, as the engine calls it (``OnlineFeatures.observe``), for 50
feature names over 4 entities (customer, account, device, merchant), after a warm-up that fills
the windows; microseconds p50/p99 per event. Memory per 1M entities: Python allocations
(tracemalloc) of the state for fresh entity ids, with one and with ten events per entity.

Offline: 1M stored events (1% of them up to 4 minutes late, ties in time) x 15 window features,
the compiled point-in-time query against a hand-written DuckDB window query for the same 15
features (RANGE frames, the same JSON extraction; it ignores ingestion order, so it is not
point-in-time correct on late rows — that difference is counted). Runs alternate and the ratio is
the median of per-pair ratios, on wall time and on this process's CPU time (DuckDB's threads run in
it): on a shared 2-core box the CPU ratio is the steadier of the two. ``--verify`` replays the
same million events through the online engine and counts mismatching values (expected: 0).
When pyspark is importable (the ``spark`` extra; ``--no-spark`` skips it) the same compiled
definitions run on Spark local mode over the same events (moved through Parquet, outside the
timing) and every value is compared with DuckDB's (expected: 0 mismatches).

Output: a table on stdout and ``benchmarks/results/features.json``. Nothing is asserted; targets
(online p99 <= 50 us for 50 features, offline <= 1.2x the hand-written query) are reported as met
or not.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
from rich.console import Console
from rich.table import Table

from decisionloop.domain.events import Event, EventCatalog
from decisionloop.engine.engine import build_engine
from decisionloop.features.offline import compile_offline
from decisionloop.features.online import OnlineFeatures
from decisionloop.project.loader import Project, load_project

ROOT = Path(__file__).resolve().parent.parent
console = Console()
Result = dict[str, Any]
T0 = datetime(2026, 6, 1, tzinfo=UTC)

ENTITIES = """
entities:
  customer: {key: customer_id}
  account: {key: account_id}
  device: {key: device_id}
  merchant: {key: merchant_id}
"""
EVENTS = """
event_types:
  transaction:
    entities: {customer: required, account: required, device: optional, merchant: optional}
    fields:
      amount: {type: number, required: true}
      channel:
        type: enum
        required: true
        values: [card_present, card_online, transfer, instant_payment, atm]
      direction: {type: enum, required: true, values: [debit, credit]}
"""
# 50 names over 4 entities: every aggregation, 10m .. 7d windows, filters.
ONLINE_FEATURES = """
features:
  - {name: debit_count, entity: customer, aggregation: count, windows: [10m, 1h, 24h, 7d],
     event_types: [transaction], filter: "direction = 'debit'"}
  - {name: debit_sum, entity: customer, aggregation: sum, field: amount, windows: [1h, 24h, 7d],
     event_types: [transaction], filter: "direction = 'debit'"}
  - {name: amount_avg, entity: customer, aggregation: avg, field: amount, windows: [24h, 7d],
     event_types: [transaction]}
  - {name: amount_max, entity: customer, aggregation: max, field: amount, windows: [24h],
     event_types: [transaction]}
  - {name: amount_min, entity: customer, aggregation: min, field: amount, windows: [7d],
     event_types: [transaction]}
  - {name: merchants, entity: customer, aggregation: distinct_count, field: merchant_id,
     windows: [1h, 24h], event_types: [transaction]}
  - {name: devices, entity: customer, aggregation: distinct_count, field: device_id,
     windows: [24h, 7d], event_types: [transaction]}
  - {name: card_online_count, entity: customer, aggregation: count, windows: [10m, 1h],
     event_types: [transaction], filter: "channel = 'card_online'"}
  - {name: credit_count, entity: customer, aggregation: count, windows: [24h],
     event_types: [transaction], filter: "direction = 'credit'"}
  - {name: credit_sum, entity: customer, aggregation: sum, field: amount, windows: [24h, 7d],
     event_types: [transaction], filter: "direction = 'credit'"}
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
  - {name: amount_avg, entity: account, aggregation: avg, field: amount, windows: [7d],
     event_types: [transaction]}
  - {name: credit_count, entity: account, aggregation: count, windows: [24h],
     event_types: [transaction], filter: "direction = 'credit'"}
  - {name: credit_sum, entity: account, aggregation: sum, field: amount, windows: [24h],
     event_types: [transaction], filter: "direction = 'credit'"}
  - {name: txn_count, entity: device, aggregation: count, windows: [10m, 1h, 24h],
     event_types: [transaction]}
  - {name: customers, entity: device, aggregation: distinct_count, field: customer_id,
     windows: [1h, 24h, 7d], event_types: [transaction]}
  - {name: accounts, entity: device, aggregation: distinct_count, field: account_id,
     windows: [24h], event_types: [transaction]}
  - {name: amount_sum, entity: device, aggregation: sum, field: amount, windows: [1h, 24h],
     event_types: [transaction]}
  - {name: amount_max, entity: device, aggregation: max, field: amount, windows: [24h],
     event_types: [transaction]}
  - {name: txn_count, entity: merchant, aggregation: count, windows: [10m, 1h, 24h],
     event_types: [transaction]}
  - {name: amount_sum, entity: merchant, aggregation: sum, field: amount, windows: [1h, 24h],
     event_types: [transaction]}
  - {name: customers, entity: merchant, aggregation: distinct_count, field: customer_id,
     windows: [1h, 24h], event_types: [transaction]}
  - {name: amount_avg, entity: merchant, aggregation: avg, field: amount, windows: [24h],
     event_types: [transaction]}
"""
# 15 window features for the offline comparison, and the same by hand.
OFFLINE_FEATURES = """
features:
  - {name: debit_count, entity: customer, aggregation: count, windows: [1h, 24h, 7d],
     event_types: [transaction], filter: "direction = 'debit'"}
  - {name: debit_sum, entity: customer, aggregation: sum, field: amount, windows: [1h, 24h, 7d],
     event_types: [transaction], filter: "direction = 'debit'"}
  - {name: amount_avg, entity: customer, aggregation: avg, field: amount, windows: [24h],
     event_types: [transaction]}
  - {name: amount_max, entity: customer, aggregation: max, field: amount, windows: [24h],
     event_types: [transaction]}
  - {name: amount_min, entity: customer, aggregation: min, field: amount, windows: [7d],
     event_types: [transaction]}
  - {name: card_online_count, entity: customer, aggregation: count, windows: [10m],
     event_types: [transaction], filter: "channel = 'card_online'"}
  - {name: merchants, entity: customer, aggregation: distinct_count, field: merchant_id,
     windows: [24h], event_types: [transaction]}
  - {name: credit_count, entity: account, aggregation: count, windows: [1h, 24h],
     event_types: [transaction], filter: "direction = 'credit'"}
  - {name: credit_sum, entity: account, aggregation: sum, field: amount, windows: [24h],
     event_types: [transaction], filter: "direction = 'credit'"}
  - {name: txn_count, entity: merchant, aggregation: count, windows: [1h],
     event_types: [transaction]}
"""
H = 3_600_000_000  # an hour in microseconds
HAND_WRITTEN = [  # (aggregate over the typed columns, partition, window)
    ("count(CASE WHEN direction = 'debit' THEN 1 END)", "customer_id", H),
    ("count(CASE WHEN direction = 'debit' THEN 1 END)", "customer_id", 24 * H),
    ("count(CASE WHEN direction = 'debit' THEN 1 END)", "customer_id", 168 * H),
    ("sum(CASE WHEN direction = 'debit' THEN amount END)", "customer_id", H),
    ("sum(CASE WHEN direction = 'debit' THEN amount END)", "customer_id", 24 * H),
    ("sum(CASE WHEN direction = 'debit' THEN amount END)", "customer_id", 168 * H),
    ("avg(amount)", "customer_id", 24 * H),
    ("max(amount)", "customer_id", 24 * H),
    ("min(amount)", "customer_id", 168 * H),
    ("count(CASE WHEN channel = 'card_online' THEN 1 END)", "customer_id", H // 6),
    ("count(DISTINCT merchant_id)", "customer_id", 24 * H),
    ("count(CASE WHEN direction = 'credit' THEN 1 END)", "account_id", H),
    ("count(CASE WHEN direction = 'credit' THEN 1 END)", "account_id", 24 * H),
    ("sum(CASE WHEN direction = 'credit' THEN amount END)", "account_id", 24 * H),
    ("count(*)", "merchant_id", H),
]


def hand_written_sql() -> str:
    fields = '{"amount": "DOUBLE", "customer_id": "VARCHAR", "account_id": "VARCHAR", '
    fields += '"channel": "VARCHAR", "direction": "VARCHAR", "merchant_id": "VARCHAR"}'
    columns = ", ".join(
        f"CASE WHEN {key} IS NOT NULL THEN {aggregate} OVER (PARTITION BY {key} ORDER BY t "
        f"RANGE BETWEEN {window - 1} PRECEDING AND CURRENT ROW) END AS f{i}"
        for i, (aggregate, key, window) in enumerate(HAND_WRITTEN)
    )
    return (
        "WITH parsed AS (SELECT seq, event_id, epoch_us(occurred_at) AS t, "
        f"json_transform(payload, '{fields}') AS p FROM events), "
        "typed AS (SELECT seq, event_id, t, p.amount AS amount, p.customer_id AS customer_id, "
        "p.account_id AS account_id, p.channel AS channel, p.direction AS direction, "
        "p.merchant_id AS merchant_id FROM parsed) "
        f"SELECT event_id, {columns} FROM typed ORDER BY seq"
    )


def write_project(root: Path, features: str) -> Project:
    files = {
        "project.yaml": "name: bench\n",
        "entities.yaml": ENTITIES,
        "events/core.yaml": EVENTS,
        "features/bench.yaml": features,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return load_project(root)


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# -- online ---------------------------------------------------------------------------------------
def synthetic_events(
    catalog: EventCatalog, count: int, seconds: float, population: dict[str, int], seed: int = 7
) -> list[Event]:
    """``count`` transactions spread over ``seconds`` of event time, 1% up to 4 minutes late."""
    rng = random.Random(seed)
    channels = ["card_present", "card_online", "transfer", "instant_payment", "atm"]
    merchants = list(range(population["merchant"]))
    weights = list(itertools.accumulate(1 / (m + 1) ** 0.9 for m in merchants))
    events = []
    step = seconds / count
    for i in range(count):
        late = rng.uniform(0, 240) if rng.random() < 0.01 else 0.0
        occurred = T0 + timedelta(seconds=i * step - late)
        customer = rng.randrange(population["customer"])
        raw: dict[str, Any] = {
            "event_id": f"e{i}",
            "type": "transaction",
            "occurred_at": occurred.isoformat(),
            "customer_id": f"C{customer}",
            "account_id": f"A{customer}-{rng.randrange(2)}",
            "amount": round(rng.lognormvariate(3.5, 1.2), 2),
            "channel": rng.choice(channels),
            "direction": "credit" if rng.random() < 0.25 else "debit",
        }
        if rng.random() < 0.8:
            raw["device_id"] = f"D{rng.randrange(population['device'])}"
        if rng.random() < 0.7:  # Zipf(0.9) over the merchants: the busiest has ~5% of sales
            raw["merchant_id"] = f"M{rng.choices(merchants, cum_weights=weights)[0]}"
        events.append(catalog.validate(raw))
    return events


def summary(timings: list[float]) -> Result:
    ordered = sorted(timings)
    return {
        "p50": round(percentile(ordered, 0.50), 2),
        "p90": round(percentile(ordered, 0.90), 2),
        "p99": round(percentile(ordered, 0.99), 2),
        "p999": round(percentile(ordered, 0.999), 2),
        "max": round(ordered[-1], 1),
        "mean": round(statistics.fmean(ordered), 2),
    }


def bench_online(project: Project, events: int, warmup: int, rounds: int) -> Result:
    """``rounds`` consecutive slices of the stream, each timed event by event: on a shared box
    a neighbour's burst spoils one round, not the measure (the best and median rounds are kept)."""
    engine = build_engine(project)  # as the service compiles it today
    features = engine.features
    population = {"customer": 20_000, "device": 24_000, "merchant": 5_000}
    # Two days of event time: ~10 events per customer per day, the busiest merchant ~3000.
    total = warmup + events * rounds
    stream = synthetic_events(engine.catalog, total, 2 * 86400.0, population)
    observe = features.observe
    for event in stream[:warmup]:
        observe(event)
    clock = time.perf_counter_ns
    per_round: list[Result] = []
    pooled: list[float] = []
    for r in range(rounds):
        timings = []
        gc.collect()
        for event in stream[warmup + r * events : warmup + (r + 1) * events]:
            started = clock()
            observe(event)
            timings.append((clock() - started) / 1000)
        per_round.append(summary(timings))
        pooled += timings
    best = min(per_round, key=lambda x: x["p99"])
    median_p99 = statistics.median(x["p99"] for x in per_round)
    return {
        "features": len(features.names),
        "definitions": len(features.features),
        "groups": len(features.groups),
        "entities_per_event": 4,
        "events_per_round": events,
        "rounds": rounds,
        "warmup_events": warmup,
        "entity_states": features.entities(),
        "late_events": features.late_events,
        "us_per_event": summary(pooled),
        "us_per_event_rounds": per_round,
        "best_round": best,
        "median_round_p99": median_p99,
        "target_p99_us": 50.0,
        "target_met_all_events": percentile(sorted(pooled), 0.99) <= 50.0,
        "target_met_best_round": best["p99"] <= 50.0,
    }


def bench_memory(project: Project, entities: int, events_per_entity: int) -> Result:
    """Bytes of online state per entity id (with all its feature groups), fresh ids only."""
    engine = build_engine(project)
    features: OnlineFeatures = engine.features
    count = entities * events_per_entity
    rng = random.Random(3)
    events = []
    for i in range(count):
        n = i % entities
        raw = {
            "event_id": f"m{i}",
            "type": "transaction",
            "occurred_at": (T0 + timedelta(seconds=i * 0.01)).isoformat(),
            "customer_id": f"C{n}",
            "account_id": f"A{n}",
            "device_id": f"D{n}",
            "merchant_id": f"M{n}",
            "amount": round(rng.uniform(1, 500), 2),
            "channel": "card_online",
            "direction": "debit",
        }
        events.append(engine.catalog.validate(raw))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for event in events:
        features.observe(event)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    ids = 4 * entities  # customer, account, device and merchant ids
    per_id = (after - before) / ids
    return {
        "entity_ids": ids,
        "events_per_entity": events_per_entity,
        "entity_states": features.entities(),
        "bytes_per_entity": round(per_id),
        "mb_per_1m_entities": round(per_id * 1e6 / 2**20),
    }


# -- offline --------------------------------------------------------------------------------------
def generate_source(connection: duckdb.DuckDBPyConnection, count: int) -> None:
    """``count`` transactions over ~2 weeks in the source layer's schema; 1% up to 4 min late,
    whole-second stamps (so ties), 50k customers, 100k accounts, 5k merchants."""
    from decisionloop.storage.duckdb_source import SCHEMA

    connection.execute(SCHEMA)
    step = 14 * 86400 * 1_000_000 // count
    connection.execute(
        f"""
        INSERT INTO events
        WITH r AS (SELECT range AS i, (hash(range) >> 1)::BIGINT AS h FROM range({count})),
        s AS (
            SELECT i, h,
                ((1780272000000000 + i * {step}
                  - CASE WHEN h % 100 = 0 THEN (h // 100) % 240000000 ELSE 0 END)
                 // 1000000) * 1000000 AS t
            FROM r
        )
        SELECT i, 'e' || i, 'transaction', make_timestamptz(t),
            make_timestamptz(1780272000000000 + i * {step} + 1000000),
            json_object(
                'event_id', 'e' || i, 'type', 'transaction',
                'occurred_at', strftime(make_timestamptz(t), '%Y-%m-%dT%H:%M:%SZ'),
                'customer_id', 'C' || (h % 50000),
                'account_id', 'A' || (h % 50000) || '-' || (h // 7 % 2),
                'merchant_id', CASE WHEN h // 11 % 10 < 7 THEN 'M' || (h // 13 % 5000) END,
                'amount', round(((h // 17) % 100000) / 100.0 + 0.01, 2)::DOUBLE,
                'channel', ['card_present', 'card_online', 'transfer', 'instant_payment',
                            'atm'][(h // 19 % 5 + 1)::BIGINT],
                'direction', CASE WHEN h // 23 % 4 = 0 THEN 'credit' ELSE 'debit' END
            )::VARCHAR
        FROM s ORDER BY i
        """
    )


def timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench_offline(
    project: Project, count: int, repeats: int, verify: bool, spark: bool = False
) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="dl-features-"))
    connection = duckdb.connect(str(workdir / "source.duckdb"))
    started = time.perf_counter()
    generate_source(connection, count)
    generated = time.perf_counter() - started
    query = compile_offline(project)
    reference = hand_written_sql()
    assert len(query.names) == len(HAND_WRITTEN) == 15
    ours_runs, reference_runs = [], []
    ours = theirs = None
    for _ in range(repeats):
        wall, cpu, theirs = timed(lambda: connection.sql(reference).pl())
        reference_runs.append((wall, cpu))
        wall, cpu, ours = timed(lambda: connection.sql(query.sql).pl())
        ours_runs.append((wall, cpu))
    pairs = list(zip(ours_runs, reference_runs, strict=True))
    wall_ratio = statistics.median(o[0] / r[0] for o, r in pairs)
    cpu_ratio = statistics.median(o[1] / r[1] for o, r in pairs)
    differing = differing_rows(ours, theirs)
    result: Result = {
        "events": count,
        "window_features": len(query.names),
        "generate_s": round(generated, 1),
        "compiled_s": {
            "wall": [round(r[0], 3) for r in ours_runs],
            "cpu": [round(r[1], 3) for r in ours_runs],
        },
        "hand_written_s": {
            "wall": [round(r[0], 3) for r in reference_runs],
            "cpu": [round(r[1], 3) for r in reference_runs],
        },
        "ratio_wall_median": round(wall_ratio, 3),
        "ratio_cpu_median": round(cpu_ratio, 3),
        "target_ratio": 1.2,
        "target_met": cpu_ratio <= 1.2,
        "rows_where_hand_written_differs": differing,
    }
    if verify:
        result["online_verification"] = verify_online(project, connection, ours)
    if spark:
        result["spark"] = bench_spark(project, connection, ours, workdir)
    connection.close()
    for path in workdir.iterdir():
        path.unlink()
    workdir.rmdir()
    return result


def differing_rows(ours: Any, theirs: Any) -> Result:
    """Rows where the hand-written query gives another value: in any bit (float sums in another
    order) and beyond a relative 1e-9 (late and tied events seen before they were ingested)."""
    import polars as pl

    mine = ours.rename({n: f"f{i}" for i, n in enumerate(ours.columns[1:])})
    joined = mine.join(theirs, on="event_id", suffix="_hand")
    exact = pl.lit(False)
    beyond = pl.lit(False)
    for i in range(len(HAND_WRITTEN)):
        a, b = pl.col(f"f{i}").cast(pl.Float64), pl.col(f"f{i}_hand").cast(pl.Float64)
        nulls = a.is_null() != b.is_null()
        exact = exact | (a != b).fill_null(nulls)
        beyond = beyond | ((a - b).abs() > 1e-9 * (1 + b.abs())).fill_null(nulls)
    return {
        "any_bit": int(joined.filter(exact).height),
        "beyond_1e-9": int(joined.filter(beyond).height),
    }


def spark_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyspark") is not None


def bench_spark(
    project: Project, connection: duckdb.DuckDBPyConnection, duck: Any, workdir: Path
) -> Result:
    """The compiled query on Spark local mode (all cores), one run after loading the events;
    every value compared with DuckDB's: same nulls, same numbers to the bit."""
    import polars as pl

    from decisionloop.features.spark import load_source, local_session, spark_features

    started = time.perf_counter()
    cores = os.cpu_count() or 2
    session = local_session(cores=cores, shuffle_partitions=4 * cores, memory="4g")
    events = load_source(session, connection, workdir).cache()
    loaded = events.count()
    prepared = time.perf_counter() - started
    wall, _, table = timed(lambda: spark_features(session, events, project).toArrow())
    theirs = pl.from_arrow(table)
    assert isinstance(theirs, pl.DataFrame)
    session.stop()
    names = duck.columns[1:]
    differing = int(theirs.height != duck.height or theirs.columns != duck.columns)
    if not differing:
        differing = int((theirs["event_id"] != duck["event_id"]).sum())
    mismatches = 0
    if not differing:
        for name in names:
            a, b = duck[name], theirs[name]
            nulls = a.is_null() != b.is_null()
            mismatches += int(((a != b).fill_null(False) | nulls).sum())
    return {
        "master": f"local[{cores}]",
        "events": loaded,
        "load_s": round(prepared, 1),
        "seconds": round(wall, 1),
        "values_compared": duck.height * len(names),
        "rows_out_of_order_or_missing": differing,
        "mismatches": mismatches,
    }


def verify_online(project: Project, connection: duckdb.DuckDBPyConnection, offline: Any) -> Result:
    """Replay the stored events in ingestion order through the online engine; compare all."""
    engine = build_engine(project)
    catalog = engine.catalog
    features = engine.features
    names = offline.columns[1:]
    rows = offline.iter_rows()
    mismatches = checked = 0
    started = time.perf_counter()
    result = connection.execute("SELECT payload FROM events ORDER BY seq")
    while batch := result.fetchmany(50_000):
        for (payload,) in batch:
            seen = features.observe(catalog.validate(orjson.loads(payload)))
            row = next(rows)
            for name, value in zip(names, row[1:], strict=True):
                checked += 1
                if seen.get(name) != value:
                    mismatches += 1
    return {
        "values_compared": checked,
        "mismatches": mismatches,
        "late_events": features.late_events,
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- main -----------------------------------------------------------------------------------------
def machine() -> Result:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "platform": platform.platform(),
        "git_commit": commit,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_start": list(os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--online-events", type=int, default=40_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup-events", type=int, default=100_000)
    parser.add_argument("--memory-entities", type=int, default=50_000)
    parser.add_argument("--offline-events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--no-spark", dest="spark", action="store_false")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/features.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # DuckDB's notes on Arrow copies
    report: Result = {
        "machine": machine(),
        "parameters": {k: str(v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        online_project = write_project(Path(tmp) / "online", ONLINE_FEATURES)
        offline_project = write_project(Path(tmp) / "offline", OFFLINE_FEATURES)
        console.print("online: update+read per event ...")
        report["online"] = bench_online(
            online_project, args.online_events, args.warmup_events, args.rounds
        )
        console.print("online: memory ...")
        report["memory"] = [
            bench_memory(online_project, args.memory_entities, 1),
            bench_memory(online_project, args.memory_entities // 10, 10),
        ]
        console.print(f"offline: {args.offline_events:,} events ...")
        report["offline"] = bench_offline(
            offline_project,
            args.offline_events,
            args.repeats,
            args.verify,
            spark=args.spark and spark_available(),
        )
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    show(report)
    console.print(f"written to {args.output}")


def show(report: Result) -> None:
    online, offline = report["online"], report["offline"]
    table = Table(title="features")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    us, best = online["us_per_event"], online["best_round"]
    table.add_row(
        f"online update+read, {online['features']} features (us) p50 / p99, all events",
        f"{us['p50']} / {us['p99']}",
        f"p99 <= 50 {'met' if online['target_met_all_events'] else 'NOT met'}",
    )
    table.add_row(
        "online, best of the rounds (us) p50 / p99",
        f"{best['p50']} / {best['p99']}",
        f"p99 <= 50 {'met' if online['target_met_best_round'] else 'NOT met'}",
    )
    for memory in report["memory"]:
        table.add_row(
            f"memory per 1M entities, {memory['events_per_entity']} event(s) each (MB)",
            str(memory["mb_per_1m_entities"]),
            "",
        )
    table.add_row(
        f"offline {offline['events']:,} events x 15 (s, best) compiled / hand-written",
        f"{min(offline['compiled_s']['wall'])} / {min(offline['hand_written_s']['wall'])}",
        "",
    )
    table.add_row(
        "offline ratio (median) wall / cpu",
        f"{offline['ratio_wall_median']} / {offline['ratio_cpu_median']}",
        f"<= 1.2 {'met' if offline['target_met'] else 'NOT met'}",
    )
    differs = offline["rows_where_hand_written_differs"]
    table.add_row(
        "rows where the hand-written query differs: any bit / beyond 1e-9",
        f"{differs['any_bit']:,} / {differs['beyond_1e-9']:,}",
        "",
    )
    if "online_verification" in offline:
        v = offline["online_verification"]
        table.add_row(
            "online vs offline mismatches", f"{v['mismatches']} of {v['values_compared']:,}", "0"
        )
    if "spark" in offline:
        sp = offline["spark"]
        table.add_row(f"offline on Spark {sp['master']} (s)", str(sp["seconds"]), "")
        table.add_row(
            "Spark vs DuckDB mismatches",
            f"{sp['mismatches'] + sp['rows_out_of_order_or_missing']} of {sp['values_compared']:,}",
            "0",
        )
    console.print(table)


if __name__ == "__main__":
    main()
