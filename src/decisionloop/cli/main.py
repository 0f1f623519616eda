"""The ``decisionloop`` command line (Typer + rich), thin over the same services as the API."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from decisionloop.cli.backtest import backtest
from decisionloop.cli.cases import app as cases_app
from decisionloop.cli.cases import monitor
from decisionloop.cli.evaluate import evaluate
from decisionloop.cli.features import app as features_app
from decisionloop.cli.labels import app as labels_app
from decisionloop.cli.lists import app as lists_app
from decisionloop.cli.live import replay_with_summary
from decisionloop.cli.models import app as models_app
from decisionloop.cli.models import train
from decisionloop.cli.report import report
from decisionloop.cli.rules import app as rules_app
from decisionloop.errors import DecisionLoopError
from decisionloop.settings import Settings, load_settings

app = typer.Typer(help="decisionloop: the closed decision loop for banks.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(labels_app, name="labels")
app.add_typer(lists_app, name="lists")
app.add_typer(models_app, name="models")
app.add_typer(cases_app, name="cases")
app.add_typer(features_app, name="features")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def fail(exc: DecisionLoopError) -> None:
    err.print(f"[bold red]error {exc.code}[/]: {exc.message}")
    for problem in exc.problems:
        err.print(f"  [red]-[/] {problem.where}: {problem.reason}", highlight=False)
        if problem.highlight:
            for line in problem.highlight.splitlines():
                err.print(f"      {line}", highlight=False, markup=False)
    raise typer.Exit(code=2)


def guarded(action: Callable[[], T]) -> T:
    """Run an action, turning our errors into a readable report and exit code 2."""
    try:
        return action()
    except DecisionLoopError as exc:
        fail(exc)
        raise  # unreachable: fail() exits


def settings_for(project: Path | None, data_dir: Path | None, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if project is not None:
        overrides["project_dir"] = project
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return guarded(lambda: load_settings(**overrides))


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


ProjectOpt = typer.Option(None, "--project", "-p", help="Project folder (default: settings)")
DataOpt = typer.Option(None, "--data-dir", help="Where state files live (default: settings)")


@app.command()
def init(
    directory: Path = typer.Argument(..., help="Folder to create the example project in"),
    force: bool = typer.Option(False, help="Overwrite an existing project"),
) -> None:
    """Write a working example project (events, entities, features, rules, strategy)."""
    from decisionloop.project.scaffold import init_project

    written = guarded(lambda: init_project(directory, force))
    console.print(f"[green]created[/] {len(written)} files in {directory}")
    console.print(f"next: decisionloop validate {directory}")


@app.command()
def validate(directory: Path = typer.Argument(Path("."), help="Project folder")) -> None:
    """Check every definition; report all errors with file, line and reason."""
    from decisionloop.cases.monitor import check_casework
    from decisionloop.engine.engine import compile_project

    project, engine = guarded(lambda: compile_project(directory))
    monitoring = guarded(lambda: check_casework(directory, project, engine))
    rules = sum(len(s.rules) for s in engine.strategies.values())
    console.print(
        f"[green]ok[/] {directory}: {len(project.event_types)} event types, "
        f"{len(engine.features.names)} features, {rules} rules, "
        f"{len(project.strategies)} strategies, {monitoring} monitoring rules "
        f"(fingerprint {project.fingerprint})"
    )


@app.command()
def serve(
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    host: str | None = typer.Option(None, help="Bind address"),
    port: int | None = typer.Option(None, help="Port"),
) -> None:
    """Start the decision service (API, /docs, /metrics and the live page)."""
    import uvicorn

    from decisionloop.api.app import create_app
    from decisionloop.runtime import open_service, settle_heap, start_monitoring

    extra = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings_for(project, data_dir, **extra)
    service = guarded(lambda: open_service(settings))
    start_monitoring(service)
    console.print(f"serving on http://{settings.host}:{settings.port}  (docs at /docs)")
    app = create_app(service, settings)
    settle_heap()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=settings.keep_alive_s,
    )


@app.command()
def ingest(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV, Parquet or JSONL"),
    mapping: Path | None = typer.Option(None, "--mapping", "-m", help="Column-mapping YAML"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    show: int = typer.Option(20, help="How many bad rows to print"),
) -> None:
    """Import a file into the source layer; bad rows are reported, good rows kept."""
    from decisionloop.ingest.importer import import_file
    from decisionloop.ingest.mapping import ColumnMapping
    from decisionloop.ingest.readers import count_rows
    from decisionloop.runtime import open_service

    settings = settings_for(project, data_dir)
    service = guarded(lambda: open_service(settings))
    try:
        catalog = service.engine.catalog
        column_mapping = guarded(lambda: ColumnMapping.load(mapping, catalog)) if mapping else None
        total = guarded(lambda: count_rows(file))
        with progress_bar(f"importing {file.name}", total) as advance:
            report = guarded(lambda: import_file(service, file, column_mapping, advance))
    finally:
        service.close()
    console.print(
        f"rows {report.rows}: stored {report.stored} events, {report.duplicates} duplicates, "
        f"{report.bad} bad rows"
    )
    for problem in report.bad_rows[:show]:
        err.print(f"  [red]-[/] {problem.where}: {problem.reason}", highlight=False)
    if len(report.bad_rows) > show:
        err.print(f"  ... and {len(report.bad_rows) - show} more")


@app.command()
def replay(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL of events"),
    url: str = typer.Option("http://127.0.0.1:8000", help="The running service"),
    rate: float = typer.Option(200.0, help="Events per second; 0 = as fast as possible"),
    batch: int = typer.Option(100, help="Most events per request"),
    limit: int | None = typer.Option(None, help="Stop after this many events"),
) -> None:
    """Stream history through a running service at a chosen speed, with a live summary."""
    from decisionloop.ingest.replay import iter_events

    stats = replay_with_summary(console, iter_events(file, limit), url, rate, batch)
    if stats.errors:
        err.print(f"[red]{stats.errors} failed requests[/]; last: {stats.last_error}")
        raise typer.Exit(code=1)


@app.command()
def demo(
    customers: int = typer.Option(2000, help="Size of the demo bank"),
    days: int = typer.Option(90, help="Days of history"),
    seed: int = typer.Option(7, help="Random seed (same seed, same bank)"),
    live_days: int = typer.Option(3, help="Days replayed live over HTTP; the rest is imported"),
    rate: float = typer.Option(300.0, help="Live replay speed, events per second"),
    directory: Path = typer.Option(Path("demo-data"), help="Where the demo bank is written"),
    port: int = typer.Option(8000, help="Port of the service"),
    keep_serving: bool = typer.Option(True, help="Keep the service up after the replay"),
) -> None:
    """Build the demo bank, start the service and live page, and replay decisions through it."""
    from decisionloop.cli.demo import run_demo

    guarded(
        lambda: run_demo(
            console, customers, days, seed, live_days, rate, directory, port, keep_serving
        )
    )


app.command()(backtest)
app.command()(evaluate)
app.command()(train)
app.command()(monitor)
app.command()(report)


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
