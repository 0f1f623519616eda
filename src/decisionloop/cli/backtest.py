"""``decisionloop backtest``: the per-rule report over a period of stored events, as a table and
optionally JSON and Parquet (the measures are defined in :mod:`decisionloop.rules.report`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from decisionloop.errors import ConfigError, InputError, Problem


def parse_day(text: str, option: str, end_of_day: bool) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC; with ``end_of_day``, the next midnight, so that ``--to``
    includes its day) or an ISO-8601 time (naive: UTC) used exactly."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"bad {option}", [Problem(option, f"{text!r} is not a date (YYYY-MM-DD) or ISO time")]
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def backtest(
    start: str = typer.Option(..., "--from", help="First day (YYYY-MM-DD, UTC) or ISO time"),
    end: str = typer.Option(..., "--to", help="Last day, included (YYYY-MM-DD) or ISO time"),
    rules: Path | None = typer.Option(None, "--rules", help="Candidate rule-set YAML file"),
    json_file: Path | None = typer.Option(None, "--json", help="Write the report as JSON"),
    parquet_file: Path | None = typer.Option(None, "--parquet", help="Write it as Parquet"),
    project: Path | None = typer.Option(None, "--project", "-p", help="Project folder"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Where state files live"),
) -> None:
    """Evaluate every rule over a period of stored events: hits, precision, recall, overlap and
    the outcome changes draft and candidate rules would make. ``has_label`` and ``in_list`` read
    the operational store's history, as of each event's decision."""
    from decisionloop.cli.main import console, guarded, settings_for
    from decisionloop.rules.report import backtest as run
    from decisionloop.runtime import open_ops_store

    settings = settings_for(project, data_dir)
    period_start = guarded(lambda: parse_day(start, "--from", end_of_day=False))
    period_end = guarded(lambda: parse_day(end, "--to", end_of_day=True))
    source = settings.source_path()
    if source is None:
        guarded(lambda: no_history())
        return
    # The labels and lists has_label/in_list read: ops_store_url, or <data_dir>/ops.sqlite.
    store = guarded(lambda: open_ops_store(settings))
    try:
        report = guarded(
            lambda: run(
                source, settings.project_dir, period_start, period_end, rules=rules, store=store
            )
        )
    finally:
        store.close()
    show(console, report, period_start, period_end)
    if json_file is not None:
        document = {
            "from": period_start.isoformat(),
            "to": period_end.isoformat(),
            "rules": report.to_dicts(),
        }
        json_file.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        console.print(f"wrote {json_file}")
    if parquet_file is not None:
        report.write_parquet(parquet_file)
        console.print(f"wrote {parquet_file}")


def no_history() -> None:
    raise ConfigError(
        "nothing to backtest",
        [Problem("source.type", "the memory source layer keeps no history; use duckdb")],
    )


def show(console: Console, report: pl.DataFrame, start: datetime, end: datetime) -> None:
    """One table per decided event type, rules in strategy order."""
    for (event_type,), rows in report.group_by("event_type", maintain_order=True):
        first = rows.row(0, named=True)
        table = Table(
            title=(
                f"{event_type}: {first['events']:,} events, {first['labelled_events']:,} "
                f"labelled fraud, from {start:%Y-%m-%d %H:%M} until {end:%Y-%m-%d %H:%M} UTC"
            ),
            title_justify="left",
        )
        for header in _HEADERS:
            # Figures stay whole; on a narrow terminal the rule ids fold onto more lines.
            text = header in ("rule", "status", "most with")
            table.add_column(
                header, justify="left" if text else "right", no_wrap=not text, overflow="fold"
            )
        for row in rows.iter_rows(named=True):
            change = None
            if row["escalated"] is not None:
                change = f"+{row['escalated']:,} -{row['relaxed']:,}"
            table.add_row(
                row["rule_id"],
                row["status"],
                f"{row['hits']:,}",
                _percent(row["hit_rate"]),
                f"{row['alerts_per_day']:.1f}",
                _percent(row["precision"]),
                _percent(row["recall"]),
                _percent(row["overlap_share"]),
                row["top_overlap_rule"] or "",
                change or "",
            )
        console.print(table)


# "change": events the rule would escalate (+) and relax (-) if it went live.
_HEADERS = (
    "rule",
    "status",
    "hits",
    "rate",
    "per day",
    "precision",
    "recall",
    "overlap",
    "most with",
    "change",
)


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
