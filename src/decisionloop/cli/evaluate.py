"""``decisionloop evaluate``: the prequential protocol (see :mod:`decisionloop.ml.prequential`)
for the rules alone, a model alone and both, printed as one table."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import typer
from rich.console import Console
from rich.table import Table

from decisionloop.errors import ConfigError, InputError, Problem

if TYPE_CHECKING:
    from decisionloop.ml.prequential import Protocol


def evaluate(
    train_start: str = typer.Option(..., "--train-start", help="First training day (YYYY-MM-DD)"),
    train_days: int = typer.Option(..., "--train-days", help="Days of training data"),
    delay_days: int = typer.Option(..., "--delay-days", help="Days skipped: labels not known yet"),
    test_days: int = typer.Option(..., "--test-days", help="Days scored after the delay"),
    entity: str = typer.Option(
        "customer_id", "--entity", help="The field whose values are the entities of precision@K"
    ),
    top_k: int = typer.Option(100, "--top-k", help="K of the entity precision@K"),
    predictions: Path | None = typer.Option(
        None, "--predictions", help="Write every test event's event_id,score (CSV)"
    ),
    event_type: str | None = typer.Option(
        None, "--event-type", help="The decided type (default: the only one with a strategy)"
    ),
    label: list[str] = typer.Option(["fraud"], "--label", help="Positive label(s)"),
    json_file: Path | None = typer.Option(None, "--json", help="Write the results as JSON"),
    project: Path | None = typer.Option(None, "--project", "-p", help="Project folder"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Where state files live"),
) -> None:
    """Train on a window, skip the delay, score the test days with known entities removed:
    ROC AUC, average precision and entity precision@K for rules, model and both."""
    import duckdb

    from decisionloop.cli.main import console, guarded, settings_for
    from decisionloop.ml.evaluate import evaluate as run
    from decisionloop.project.loader import load_project
    from decisionloop.runtime import open_ops_store

    settings = settings_for(project, data_dir)
    protocol = guarded(lambda: _protocol(train_start, train_days, delay_days, test_days, top_k))
    source = settings.source_path()
    if source is None or not source.exists():
        guarded(lambda: _no_history(source))
        return
    loaded = guarded(lambda: load_project(settings.project_dir))
    store = guarded(lambda: open_ops_store(settings))
    try:
        with (
            console.status("building the point-in-time frame and training ..."),
            duckdb.connect(str(source), read_only=True) as conn,
        ):
            result = guarded(
                lambda: run(
                    conn,
                    loaded,
                    protocol,
                    entity=entity,
                    event_type=event_type,
                    positive_labels=tuple(label),
                    store=store,
                )
            )
    finally:
        store.close()
    show(console, result.as_dict())
    if predictions is not None:
        result.write_predictions(predictions)
        console.print(f"wrote {result.predictions.height:,} predictions to {predictions}")
    if json_file is not None:
        json_file.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))
        console.print(f"wrote {json_file}")


def _protocol(start: str, train: int, delay: int, test: int, top_k: int) -> Protocol:
    from decisionloop.ml.prequential import Protocol

    try:
        day = date.fromisoformat(start)
    except ValueError:
        raise InputError(
            "bad --train-start", [Problem("--train-start", f"{start!r} is not YYYY-MM-DD")]
        ) from None
    try:
        return Protocol(day, train, delay, test, top_k)
    except ValueError as exc:
        raise InputError("bad protocol", [Problem("--train-days", str(exc))]) from exc


def _no_history(source: Path | None) -> None:
    where = (
        "the memory source layer keeps no history; use duckdb"
        if source is None
        else (f"no source layer at {source}: ingest or replay events first")
    )
    raise ConfigError("nothing to evaluate", [Problem("source", where)])


def show(console: Console, result: dict[str, object]) -> None:
    title = (
        f"{result['event_type']}: train {result['train_days']} days from {result['train_start']}"
        f" ({result['train_events']:,} events, {result['train_frauds']:,} fraud), delay "
        f"{result['delay_days']}, test {result['test_days']} days; entity {result['entity']}"
    )
    table = Table(title=title, title_justify="left")
    k = result["top_k"]
    for header in ("ranking", "ROC AUC", "avg precision", f"precision@{k}", "events", "frauds"):
        table.add_column(header, justify="left" if header == "ranking" else "right")
    results = result["results"]
    assert isinstance(results, dict)
    for name, m in results.items():
        table.add_row(
            name,
            _figure(m["roc_auc"]),
            _figure(m["average_precision"]),
            _figure(m["entity_precision_at_k"]),
            f"{m['events']:,}",
            f"{m['frauds']:,}",
        )
    console.print(table)
    console.print(
        f"known entities removed per test day: {result['known_entities_removed_per_test_day']}"
    )


def _figure(value: object) -> str:
    return "-" if value is None else f"{value:.3f}"
