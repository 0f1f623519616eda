"""Model serving benchmark (``python -m benchmarks.models``).

A LightGBM model of 200 trees (31 leaves) trained on synthetic data with 50 numeric features
(10% NULLs, 5% zeros, fixed seed), then single-row scoring, each form on the same rows:

- **booster**: ``Booster.predict`` on a prepared one-row float64 array (its best case; the engine
  would first build the array from the decision row);
- **walker**: the generated tree walker (``ml/walker.py``), probability only, from a dict row;
- **walker+contributions**: the walker with per-path contributions, as the engine serves it;
- **booster+contributions**: ``Booster.predict(pred_contrib=True)`` (TreeSHAP), for reference.

Per form: µs per call, p50 and p99 over individually timed calls (after a warm-up). The walker's
probabilities are checked identical to ``Booster.predict`` on every benchmark row. Nothing is
asserted; results go to stdout and ``benchmarks/results/models.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from decisionloop.ml.walker import compile_walker

RESULTS = Path(__file__).resolve().parent / "results" / "models.json"
SEED = 20260601


def _data(rows: int, features: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(rows, features))
    x[rng.random(x.shape) < 0.05] = 0.0
    x[rng.random(x.shape) < 0.10] = np.nan
    z = np.nan_to_num(x)
    signal = z[:, 0] + 0.8 * z[:, 1] * z[:, 2] + 0.5 * np.abs(z[:, 3]) - 0.4 * z[:, 4]
    y = (signal + rng.normal(scale=0.8, size=rows) > 2.2).astype(int)
    return x, y


def _timed(call: Callable[[int], Any], n: int) -> dict[str, float]:
    for i in range(min(n, 200)):  # warm-up
        call(i)
    samples = []
    clock = time.perf_counter_ns
    for i in range(n):
        started = clock()
        call(i)
        samples.append((clock() - started) / 1000.0)
    samples.sort()
    return {
        "p50_us": round(samples[len(samples) // 2], 1),
        "p99_us": round(samples[int(len(samples) * 0.99)], 1),
        "mean_us": round(sum(samples) / len(samples), 1),
        "calls": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--rows", type=int, default=2000, help="rows scored per form")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    x, y = _data(20_000, args.features, rng)
    started = time.perf_counter()
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=args.trees)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    walker = compile_walker(booster.dump_model())
    compile_s = time.perf_counter() - started
    test, _ = _data(args.rows, args.features, rng)
    names = walker.feature_names
    rows = [
        {n: None if math.isnan(v) else float(v) for n, v in zip(names, row, strict=True)}
        for row in test
    ]
    arrays = [test[i : i + 1] for i in range(len(test))]
    expected = booster.predict(test)
    walked = np.array([walker.predict(r) for r in rows])
    identical = bool(np.array_equal(expected, walked))
    loads = {"loadavg_before": list(os.getloadavg())}
    forms = {
        "booster": _timed(lambda i: booster.predict(arrays[i]), args.rows),
        "walker": _timed(lambda i: walker.predict(rows[i]), args.rows),
        "walker+contributions": _timed(lambda i: walker.explain(rows[i]), args.rows),
        "booster+contributions": _timed(
            lambda i: booster.predict(arrays[i], pred_contrib=True), min(args.rows, 500)
        ),
    }
    loads["loadavg_after"] = list(os.getloadavg())
    document = {
        "benchmark": "models",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            **loads,
        },
        "seed": SEED,
        "model": {
            "trees": args.trees,
            "num_leaves": 31,
            "features": args.features,
            "lightgbm": lgb.__version__,
            "train_s": round(train_s, 2),
            "walker_compile_s": round(compile_s, 2),
            "walker_source_lines": walker.source.count("\n"),
        },
        "identical_scores": {"rows": len(rows), "identical": identical},
        "single_row_us": forms,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"{args.trees} trees, {args.features} features; identical scores on {len(rows)} rows:")
    print(f"  {identical}")
    for form, figures in forms.items():
        print(f"  {form:<24} p50 {figures['p50_us']:>8.1f} us   p99 {figures['p99_us']:>8.1f} us")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
