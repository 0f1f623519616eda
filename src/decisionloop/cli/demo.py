"""``decisionloop demo``: a synthetic bank, the service and live page, decisions flowing."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from decisionloop.api.app import create_app
from decisionloop.api.server import BackgroundServer
from decisionloop.cli.live import replay_with_summary
from decisionloop.demo.bank import BankConfig, generate, write
from decisionloop.engine.service import DecisionService
from decisionloop.project.scaffold import init_project
from decisionloop.runtime import open_service, settle_heap, start_monitoring
from decisionloop.settings import load_settings


def run_demo(
    console: Console,
    customers: int,
    days: int,
    seed: int,
    live_days: int,
    rate: float,
    directory: Path,
    port: int,
    keep_serving: bool,
) -> None:
    config = BankConfig(seed=seed, customers=customers, days=days)
    console.rule("[bold]1. building the demo bank")
    started = time.perf_counter()
    bank = generate(config)
    files = write(bank, directory)
    console.print(
        f"{len(bank.customers)} customers, {len(bank.events)} events, "
        f"{len(bank.truth)} fraudulent transactions in {time.perf_counter() - started:.1f} s "
        f"-> {directory}"
    )
    project_dir = directory / "project"
    state_dir = directory / "state"
    shutil.rmtree(state_dir, ignore_errors=True)  # a demo starts from an empty source layer
    if not (project_dir / "project.yaml").exists():
        init_project(project_dir)
    settings = load_settings(project_dir=project_dir, data_dir=state_dir, port=port)
    service = open_service(settings)

    cutoff = config.start + timedelta(days=max(days - live_days, 0))
    history = [e for e in bank.events if e["occurred_at"] < cutoff.isoformat()]
    live = [e for e in bank.events if e["occurred_at"] >= cutoff.isoformat()]
    console.rule(f"[bold]2. importing {len(history)} events of history (until {cutoff:%Y-%m-%d})")
    _import_history(service, history, console)

    app = create_app(service, settings)
    settle_heap()  # the generated bank stays in memory: keep it out of every full collection
    server = BackgroundServer(app, settings.host, port, settings.keep_alive_s).start()
    start_monitoring(service)  # after the import: history is not monitored wholesale
    console.rule("[bold]3. the service is up")
    console.print(f"live page:  [bold cyan]{server.url}/[/]")
    console.print(f"API docs:   {server.url}/docs     metrics: {server.url}/metrics")
    console.print(f"try:        curl -s {server.url}/v1/summary")
    console.rule(f"[bold]4. replaying {len(live)} live events at {rate:.0f} events/s")
    stats = replay_with_summary(console, live, server.url, rate, 100)
    console.print(
        f"replayed {stats.sent} events, {stats.decided} decisions, "
        f"{stats.errors} errors; files: {', '.join(sorted(files))}"
    )
    if keep_serving:
        console.print(f"still serving on {server.url}/ - press Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    server.stop()


def _import_history(
    service: DecisionService, events: list[dict[str, object]], console: Console
) -> None:
    catalog = service.engine.catalog
    futures = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("importing history", total=len(events))
        for start in range(0, len(events), 5000):
            chunk = [catalog.validate(e) for e in events[start : start + 5000]]
            future, _ = service.ingest_valid(chunk)
            futures.append(future)
            progress.advance(task, len(chunk))
        for future in futures:
            future.result()
