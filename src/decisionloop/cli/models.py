"""``decisionloop train`` and ``decisionloop models list``: fit a model on stored history and see
the registry (see docs/models.md)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from decisionloop.errors import ConfigError, InputError, Problem

if TYPE_CHECKING:
    from decisionloop.ops.store import Label
    from decisionloop.settings import Settings

app = typer.Typer(help="The model registry of the project.", no_args_is_help=True)


def train(
    name: str = typer.Option(..., "--name", help="Model name (a folder under <project>/models)"),
    event_type: str = typer.Option("transaction", "--event-type", help="Decided event type"),
    start: str = typer.Option(..., "--from", help="First day (YYYY-MM-DD, UTC) or ISO time"),
    end: str = typer.Option(..., "--to", help="Last day, included (YYYY-MM-DD) or ISO time"),
    as_of: str | None = typer.Option(
        None, "--as-of", help="Count only labels available by then (default: all stored)"
    ),
    label: list[str] = typer.Option(["fraud"], "--label", help="Label(s) that make a positive"),
    estimator: str = typer.Option("lightgbm", help="lightgbm, logistic, hist_gradient_boosting"),
    trees: int = typer.Option(200, min=1, help="Boosting rounds (LightGBM)"),
    validation_share: float = typer.Option(0.2, help="Last share of the time span held out"),
    project: Path | None = typer.Option(None, "--project", "-p", help="Project folder"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Where state files live"),
) -> None:
    """Train a model on stored events and their labels, validate it on the last part of the
    period, and register it as the next version of NAME."""
    from decisionloop.cli.backtest import parse_day
    from decisionloop.cli.main import console, guarded, settings_for
    from decisionloop.ml.train import ESTIMATORS, fit_and_register
    from decisionloop.ml.training import training_frame
    from decisionloop.project.loader import load_project
    from decisionloop.rules.report import open_source

    settings = settings_for(project, data_dir)
    period_start = guarded(lambda: parse_day(start, "--from", end_of_day=False))
    period_end = guarded(lambda: parse_day(end, "--to", end_of_day=True))
    cutoff: datetime | None = None
    if as_of is not None:
        cutoff = guarded(lambda: parse_day(as_of, "--as-of", end_of_day=True))
    if estimator not in ESTIMATORS:
        guarded(lambda: _unknown_estimator(estimator))
    source = settings.source_path()
    if source is None:
        guarded(_no_history)
        return
    loaded = guarded(lambda: load_project(settings.project_dir))
    risk_labels = guarded(lambda: _risk_labels(settings))  # what labelled_neighbours reads
    connection = guarded(lambda: open_source(source))
    try:
        frame = guarded(
            lambda: training_frame(
                connection,
                loaded,
                event_type,
                start=period_start,
                end=period_end,
                as_of=cutoff,
                positive_labels=label,
                risk_labels=risk_labels,
            )
        )
    finally:
        connection.close()
    console.print(
        f"{frame.frame.height:,} {event_type} events, {frame.positives:,} positives, "
        f"{len(frame.feature_names)} inputs"
    )
    result = guarded(
        lambda: fit_and_register(
            frame, loaded, name, ESTIMATORS[estimator](trees), validation_share
        )
    )
    held = result.metrics["validation"]
    console.print(
        f"[green]registered[/] {name} v{result.model.version} ({estimator}) in "
        f"{result.model.path}: validation {held['rows']:,} rows, {held['positives']:,} "
        f"positives, ROC AUC {_figure(held.get('roc_auc'))}, "
        f"average precision {_figure(held.get('average_precision'))}"
    )
    console.print(
        f"attach it in strategies/{event_type}.yaml:\n  models:\n"
        f"    - {{name: {name}, version: {result.model.version}, status: shadow}}",
        highlight=False,
    )


@app.command("list")
def list_models(
    project: Path | None = typer.Option(None, "--project", "-p", help="Project folder"),
) -> None:
    """Every registered model version, with its data window, validation metrics and where it is
    attached."""
    from decisionloop.cli.main import console, guarded, settings_for
    from decisionloop.ml.registry import ModelRegistry
    from decisionloop.project.loader import load_project

    settings = settings_for(project, None)
    loaded = guarded(lambda: load_project(settings.project_dir, strict=False))
    attached: dict[tuple[str, int], list[str]] = {}
    for event_type, strategy in loaded.strategies.items():
        for model in strategy.models:
            attached.setdefault((model.name, model.version), []).append(
                f"{event_type}:{model.status}"
            )
    versions = guarded(lambda: ModelRegistry(settings.project_dir).all())
    table = Table(title=f"models in {settings.project_dir}", title_justify="left")
    table.add_column("model", no_wrap=True)
    for header in ("estimator", "event type", "events", "AUC", "AP", "created", "use"):
        table.add_column(header, overflow="fold")
    for version in versions:
        meta = version.metadata
        window = meta.get("window", {})
        held = meta.get("metrics", {}).get("validation", {})
        table.add_row(
            f"{version.name} v{version.version}",
            str(meta.get("estimator", "")),
            str(meta.get("event_type", "")),
            f"{_day(window.get('first_event'))} .. {_day(window.get('last_event'))}",
            _figure(held.get("roc_auc")),
            _figure(held.get("average_precision")),
            str(meta.get("created_at", ""))[:19],
            ", ".join(attached.get((version.name, version.version), [])) or "-",
        )
    console.print(table)
    for (model_name, number), uses in sorted(attached.items()):
        if not any(v.name == model_name and v.version == number for v in versions):
            console.print(
                f"[yellow]warning[/] {model_name} v{number} is attached ({', '.join(uses)}) but "
                "not in the registry: those decisions run degraded"
            )


def _day(value: object) -> str:
    return str(value or "")[:10]


def _figure(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def _unknown_estimator(name: str) -> None:
    from decisionloop.ml.train import ESTIMATORS

    raise InputError(
        f"unknown estimator {name!r}", [Problem("--estimator", f"one of {', '.join(ESTIMATORS)}")]
    )


def _no_history() -> None:
    raise ConfigError(
        "nothing to train on",
        [Problem("source.type", "the memory source layer keeps no history; use duckdb")],
    )


def _risk_labels(settings: Settings) -> list[Label]:
    from decisionloop.runtime import open_ops_store

    store = open_ops_store(settings)
    try:
        return store.labels()
    finally:
        store.close()
