"""``decisionloop report``: the loop report over a period — per rule and model, alerts, precision,
recall, false positives per true positive, cases and time to disposition; weekly PSI drift of
each model's inputs and score (see :mod:`decisionloop.reports.loop`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from decisionloop.errors import ConfigError, Problem
from decisionloop.ml.drift import DEFAULT_BINS


def report(
    start: str = typer.Option(..., "--from", help="First day (YYYY-MM-DD, UTC) or ISO time"),
    end: str = typer.Option(..., "--to", help="Last day, included (YYYY-MM-DD) or ISO time"),
    psi_watch: float = typer.Option(0.1, "--psi-watch", help="PSI from which drift is watched"),
    psi_alert: float = typer.Option(0.25, "--psi-alert", help="PSI from which drift alerts"),
    bins: int = typer.Option(DEFAULT_BINS, "--bins", help="PSI bins (reference quantiles)"),
    json_file: Path | None = typer.Option(None, "--json", help="Write the report as JSON"),
    project: Path | None = typer.Option(None, "--project", "-p", help="Project folder"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Where state files live"),
) -> None:
    """Per rule and model over a period: alerts, precision, recall, false positives per true
    positive, cases opened and closed, time to disposition; weekly PSI of each model's inputs
    and score against its training window, flagged at --psi-watch and --psi-alert."""
    from decisionloop.cli.backtest import parse_day
    from decisionloop.cli.cases import case_service
    from decisionloop.cli.main import console, guarded, settings_for
    from decisionloop.ml.drift import DriftThresholds
    from decisionloop.reports.loop import loop_report
    from decisionloop.runtime import open_ops_store

    settings = settings_for(project, data_dir)
    period_start = guarded(lambda: parse_day(start, "--from", end_of_day=False))
    period_end = guarded(lambda: parse_day(end, "--to", end_of_day=True))
    thresholds = guarded(lambda: DriftThresholds(psi_watch, psi_alert))
    source = settings.source_path()
    if source is None:
        guarded(_no_history)
        return
    ops = guarded(lambda: open_ops_store(settings))
    try:
        cases = guarded(lambda: case_service(settings, ops)).store
        done = guarded(
            lambda: loop_report(
                source,
                settings.project_dir,
                period_start,
                period_end,
                cases=cases,
                store=ops,
                thresholds=thresholds,
                bins=bins,
            )
        )
    finally:
        ops.close()
    show(console, done.rules, done.models, done.drift, period_start, period_end)
    if json_file is not None:
        json_file.write_bytes(orjson.dumps(done.as_dict(), option=orjson.OPT_INDENT_2))
        console.print(f"wrote {json_file}")


def _no_history() -> None:
    raise ConfigError(
        "nothing to report",
        [Problem("source.type", "the memory source layer keeps no history; use duckdb")],
    )


def show(
    console: Console,
    rules: pl.DataFrame,
    models: pl.DataFrame,
    drift: pl.DataFrame,
    start: datetime,
    end: datetime,
) -> None:
    """A rules table, a models table, and per model its weekly PSI (variables x weeks)."""
    period = f"from {start:%Y-%m-%d %H:%M} until {end:%Y-%m-%d %H:%M} UTC"
    table = _table(f"rules, {period}", ("rule", "status", "hits"))
    for row in rules.iter_rows(named=True):
        table.add_row(row["rule_id"], row["status"], _count(row["hits"]), *_figures(row))
    console.print(table)
    if models.height:
        table = _table(f"models, {period}", ("model", "status", "flagged"))
        for row in models.iter_rows(named=True):
            name = f"{row['model']} v{row['version']}"
            table.add_row(name, row["status"], _count(row["flagged"]), *_figures(row))
        console.print(table)
        for row in models.filter(pl.col("problem").is_not_null()).iter_rows(named=True):
            console.print(f"[yellow]{row['model']} v{row['version']}[/]: {row['problem']}")
    for (model, version), rows in drift.group_by("model", "version", maintain_order=True):
        _show_drift(console, str(model), int(str(version)), rows)


_FIGURES = (
    "precision",
    "recall",
    "FP/TP",
    "alerts",
    "cases",
    "closed",
    "to dispose p50",
    "p90",
)


def _table(title: str, first: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    for header in (*first, *_FIGURES):
        text = header in ("rule", "model", "status")
        table.add_column(
            header, justify="left" if text else "right", no_wrap=not text, overflow="fold"
        )
    return table


def _figures(row: dict[str, Any]) -> tuple[str, ...]:
    ratio = row["false_positives_per_true_positive"]
    return (
        _percent(row["precision"]),
        _percent(row["recall"]),
        "-" if ratio is None else f"{ratio:.2f}",
        _count(row["alerts"]),
        _count(row["cases_opened"]),
        _count(row["cases_closed"]),
        _duration(row["disposition_median_s"]),
        _duration(row["disposition_p90_s"]),
    )


def _show_drift(console: Console, model: str, version: int, rows: pl.DataFrame) -> None:
    weeks = rows.select("week_start", "events").unique("week_start", maintain_order=True)
    reference = max((n or 0 for n in rows["reference_events"].to_list()), default=0)
    # A heading line, not a title: rich would fold a title to the width of a narrow table.
    console.print(
        f"drift of {model} v{version}: PSI per week (events) against its training window "
        f"({reference:,} events)"
    )
    table = Table()
    table.add_column("variable", no_wrap=False, overflow="fold")
    for week in weeks.iter_rows(named=True):
        table.add_column(f"{week['week_start']:%m-%d} ({week['events']:,})", justify="right")
    for (variable,), cells in rows.group_by("variable", maintain_order=True):
        table.add_row(str(variable), *(_psi(r) for r in cells.iter_rows(named=True)))
    console.print(table)


_STYLE = {"ok": "{}", "watch": "[yellow]{} watch[/]", "alert": "[bold red]{} ALERT[/]"}


def _psi(row: dict[str, Any]) -> str:
    if row["psi"] is None:
        return "-"
    return _STYLE[row["level"]].format(f"{row['psi']:.3f}")


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
