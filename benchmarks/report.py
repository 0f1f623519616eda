"""Render the benchmark results (``python -m benchmarks.report``).

Reads ``benchmarks/results/decide.json`` and ``peers.json`` (whichever exist) and writes:

- a Markdown report to stdout and ``benchmarks/results/report.md``: the machine's load during
  each run, the in-process stages, the HTTP runs, ours against peers, the targets met or not;
- PNG charts next to it: ``latency_vs_load.png`` (latency percentiles against offered load, for
  ``/v1/decide`` and ``/v1/decide/batch``), ``rules_vs_peers.png`` (µs per event against the
  number of rules, ours and peers) and ``stages.png`` (in-process p50 and p99 per stage).

matplotlib comes with the ``bench`` extra (``pip install -e '.[bench]'``); without it the
Markdown is still written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
Doc = dict[str, Any]
STAGES = ("validate", "features", "rules", "model", "combine")


def load(path: Path) -> Doc | None:
    return json.loads(path.read_text()) if path.exists() else None


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "met" if value else "**not met**"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def machine_line(name: str, doc: Doc) -> str:
    m = doc.get("machine", {})
    start = m.get("loadavg_start") or m.get("loadavg_before")
    end = m.get("loadavg_end") or m.get("loadavg_after")
    when = m.get("timestamp") or doc.get("measured_at")
    parts = [f"**{name}**: {when}, {m.get('cpu_count') or m.get('cpus')} CPUs"]
    if start:
        parts.append(f"load average {start[0]:.2f} at the start, {end[0]:.2f} at the end")
    if m.get("background_cores_before") is not None:
        parts.append(f"{m['background_cores_before']} cores busy before it started")
    others = doc.get("in_process", {}) or {}
    if "other_processes_cores" in others:
        parts.append(f"other processes {others['other_processes_cores']} cores in-process")
    if m.get("http_other_processes_cores_mean") is not None:
        parts.append(f"{m['http_other_processes_cores_mean']} cores over HTTP (mean)")
    if m.get("other_processes_cores") is not None:
        parts.append(f"other processes {m['other_processes_cores']} cores while measured")
    if m.get("git_commit"):
        dirty = " (uncommitted changes)" if m.get("git_dirty") else ""
        parts.append(f"commit `{m['git_commit'][:7]}`{dirty}")
    return "- " + "; ".join(parts)


def decide_section(doc: Doc) -> list[str]:
    out = ["## The whole decision (`benchmarks.decide`)", ""]
    w = doc.get("workload", {})
    model = w.get("model") or {}
    out.append(
        f"Workload: {fmt(w.get('events'), 0)} demo-bank events "
        f"({fmt(w.get('live_transactions'), 0)} live transactions decided), "
        f"{w.get('rules')} rules, {w.get('features')} features over "
        f"{', '.join(w.get('feature_entities', []))}, a LightGBM model of {model.get('trees', 0)}"
        f" trees on {model.get('inputs', '-')} inputs (validation ROC AUC "
        f"{fmt(model.get('validation_roc_auc'), 3)})."
    )
    out.append("")
    inp = doc.get("in_process")
    if inp:
        out.append(
            f"In-process, µs per decision ({inp['decisions']:,} decisions after "
            f"{inp['warmup_decisions']} warm-up; {fmt(inp['decisions_per_s'], 0)} decisions/s "
            "on one thread):"
        )
        out.append("")
        keys = ("p50", "p99", "p999")
        rows = [[s, *(fmt(inp["stages_us"][s].get(k)) for k in keys)] for s in STAGES]
        rows.append(["**total**", *(fmt(inp["total_us"][k]) for k in ("p50", "p99", "p999"))])
        rows.append(
            ["(encode answer)", *(fmt(inp["encode_us"][k]) for k in ("p50", "p99", "p999"))]
        )
        out += table(["stage", "p50", "p99", "p99.9"], rows)
    http = doc.get("http")
    if http:
        out.append("Over HTTP (open loop unless offered is `max`; latency in ms from the scheduled "
                   "send time):")  # fmt: skip
        out.append("")
        rows = []
        for r in http["runs"]:
            lat = r["latency_ms"]
            rows.append([
                f"{r['label']} `{r['path']}`",
                "max" if r["offered_rps"] is None else fmt(r["offered_rps"]),
                fmt(r["achieved_rps"]),
                fmt(r["events_per_s"], 0),
                *(fmt(lat[k], 2) for k in ("p50", "p99", "p999")),
                str(r["errors"]),
                fmt(r.get("cpu", {}).get("other_processes_cores"), 2),
            ])  # fmt: skip
        header = ["run", "offered req/s", "achieved req/s", "decisions/s", "p50", "p99", "p99.9"]
        out += table([*header, "errors", "others (cores)"], rows)
        s = http["summary"]
        out.append(
            f"Floor (`/healthz`, same server stack): {fmt(s['floor_healthz_max_rps'])} req/s; "
            f"`/v1/decide` max {fmt(s['decide_max_rps'])} req/s "
            f"({fmt(100 * (s['decide_share_of_floor'] or 0), 0)}% of the floor); at 70% of the "
            f"floor ({fmt(s['decide_at_70pct_floor_offered_rps'])} req/s offered): p99 "
            f"{fmt(s['decide_at_70pct_floor_p99_ms'], 2)} ms, {s['decide_at_70pct_floor_errors']}"
            f" errors; batch: {fmt(s['batch_best_errorless_decisions_per_s'], 0)} decisions/s."
        )
        out.append("")
    met = doc.get("targets_met") or {}
    if met:
        out += table(["target", ""], [[k, fmt(v)] for k, v in met.items()])
    return out


def peers_section(doc: Doc) -> list[str]:
    out = [
        "## The same rules, ours against peers (`benchmarks.peers`)",
        "",
        "µs per event (how many times slower than ours); fired rules compared with ours on "
        "every row.",
        "",
    ]

    def cell(r: Doc, name: str) -> str:
        if f"{name}_us" not in r:
            return "-"
        return f"{fmt(r[name + '_us'])} ({fmt(r[name + '_vs_ours'], 0)}x)"

    rows = []
    for r in doc["results"]:
        disagree = [
            k.removesuffix("_agrees") for k, v in r.items() if k.endswith("_agrees") and v < 1
        ]
        rows.append([
            f"{r['rules']:,}", fmt(r["ours_us"]), cell(r, "naive_loop"), cell(r, "zen"),
            cell(r, "rule_engine"), fmt(r["hits_per_event"], 2),
            "yes" if not disagree else "NO: " + ", ".join(disagree),
        ])  # fmt: skip
    header = ["rules", "ours", "naive loop", "zen-engine", "rule-engine", "hits/event", "agree"]
    out += table(header, rows)
    out.append(f"Target ours ≥ {doc['target_zen_ratio']:.0f}x faster than zen-engine at the "
               f"largest size: {fmt(doc['target_met'])}.")  # fmt: skip
    return [*out, ""]


def charts(decide: Doc | None, peers: Doc | None, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    http = (decide or {}).get("http")
    if http:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        panels = (("decide", "/v1/decide"), ("batch", "/v1/decide/batch (100 events)"))
        for ax, (scenario, title) in zip(axes, panels, strict=True):
            runs = [r for r in http["runs"] if r["scenario"] == scenario and r["offered_rps"]]
            runs.sort(key=lambda r: r["offered_rps"])
            per = 100 if scenario == "batch" else 1
            x = [r["offered_rps"] * per for r in runs]
            for key, style in (("p50", "o-"), ("p99", "s-"), ("p999", "^-")):
                y = [r["latency_ms"][key] for r in runs]
                ax.plot(x, y, style, label=key.replace("p999", "p99.9"))
            if scenario == "decide":
                floor = http["summary"]["floor_healthz_max_rps"]
                ax.axvline(0.7 * floor, color="grey", ls=":", label="70% of floor")
                ax.axhline(10, color="red", ls="--", lw=0.8, label="10 ms")
            ax.set_yscale("log")
            ax.set_xlabel("offered decisions/s" if per > 1 else "offered requests/s")
            ax.set_ylabel("latency, ms (from scheduled send)")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        load = decide["machine"]["loadavg_start"][0] if decide else 0
        fig.suptitle(f"Latency vs offered load (load average {load:.1f} at the start)")
        fig.tight_layout()
        written.append(folder / "latency_vs_load.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    if peers:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        results = peers["results"]
        sizes = [r["rules"] for r in results]
        lines = (
            ("ours_us", "decisionloop", "o-"),
            ("naive_loop_us", "naive loop", "s--"),
            ("zen_us", "zen-engine", "^-"),
            ("rule_engine_us", "rule-engine", "v-"),
        )
        for key, label, style in lines:
            points = [(s, r[key]) for s, r in zip(sizes, results, strict=True) if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rules")
        ax.set_ylabel("µs per event")
        ax.set_title("Rule evaluation: ours vs peers (same rules, same rows)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(folder / "rules_vs_peers.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    inp = (decide or {}).get("in_process")
    if inp:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        names = [*STAGES, "total"]
        stats = [inp["stages_us"][s] for s in STAGES] + [inp["total_us"]]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [s["p50"] or 0 for s in stats], 0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [s["p99"] or 0 for s in stats], 0.4, label="p99")
        ax.set_xticks(list(xs), names)
        ax.set_ylabel("µs")
        ax.set_title("In-process decision, per stage")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(folder / "stages.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--no-charts", action="store_true")
    args = p.parse_args(argv)
    decide, peers = load(args.results / "decide.json"), load(args.results / "peers.json")
    lines = ["# Benchmark report", "", "Rendered by `python -m benchmarks.report` from the JSON "
             "in this folder. Where other processes loaded the machine, every figure is "
             "pessimistic; the load is stated per run.", ""]  # fmt: skip
    lines += [machine_line(n, d) for n, d in (("decide", decide), ("peers", peers)) if d]
    lines.append("")
    if decide:
        lines += decide_section(decide)
    if peers:
        lines += peers_section(peers)
    written: list[Path] = []
    if not args.no_charts:
        try:
            written = charts(decide, peers, args.results)
        except ImportError:
            lines.append(
                "(charts skipped: matplotlib is not installed; `pip install -e '.[bench]'`)"
            )
    lines += [f"![{path.stem}]({path.name})" for path in written]
    text = "\n".join(lines).rstrip() + "\n"
    (args.results / "report.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
