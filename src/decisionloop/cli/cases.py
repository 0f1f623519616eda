"""``decisionloop cases`` (list, show, assign, comment, status, dispose) and ``monitor``.

Without ``--url`` the commands work on the case store of the settings (``ops_store_url`` or
``<data_dir>/ops.sqlite``); ``dispose`` then opens the service locally to append its label events
to the source layer, so it needs the source layer free (no running service). With ``--url`` they
go through a running service's API. ``monitor`` runs locally, like ``backtest``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.table import Table

from decisionloop.cases.config import load_cases_config
from decisionloop.cases.service import CaseService
from decisionloop.cases.store import CaseFilter, SqlCaseStore
from decisionloop.cli.labels import call_api, run
from decisionloop.domain.events import EventType
from decisionloop.ops.store import OpsStore, SqlOpsStore
from decisionloop.settings import Settings

T = TypeVar("T")

app = typer.Typer(help="Cases: list, show, assign, comment, move, dispose.", no_args_is_help=True)

ProjectOpt = typer.Option(None, "--project", "-p", help="Project folder (default: settings)")
DataOpt = typer.Option(None, "--data-dir", help="Where state files live (default: settings)")
UrlOpt = typer.Option(None, "--url", help="Go through the running service at this URL")
AuthorOpt = typer.Option(..., "--author", help="Who makes the change (kept in the audit trail)")


def case_service(settings: Settings, ops: OpsStore) -> CaseService:
    """The case service on the operational store's database, configured by ``cases.yaml``."""
    from decisionloop.project.loader import load_project

    project = load_project(settings.project_dir)
    types = {
        name: EventType.build(name, spec, project.entities)
        for name, spec in project.event_types.items()
    }
    config = load_cases_config(settings.project_dir, types)
    store = SqlCaseStore(ops.engine) if isinstance(ops, SqlOpsStore) else None
    if store is None:  # pragma: no cover - the runtime only opens SQL stores
        raise TypeError("the case store needs a SQL operational store")
    return CaseService(store, config)


def _locally(project: Path | None, data_dir: Path | None, action: Callable[[CaseService], T]) -> T:
    from decisionloop.cli.main import guarded, settings_for
    from decisionloop.runtime import open_ops_store

    settings = settings_for(project, data_dir)
    ops = guarded(lambda: open_ops_store(settings))
    try:
        cases = guarded(lambda: case_service(settings, ops))
        result: T = run(lambda: action(cases))
        return result
    finally:
        ops.close()


@app.command("list")
def list_cases(
    status: str | None = typer.Option(None, help="open, investigating or closed"),
    queue: str | None = typer.Option(None, help="Only this queue"),
    assignee: str | None = typer.Option(None, help="Only cases assigned to this person"),
    entity_type: str | None = typer.Option(None, "--entity-type", help="customer, account ..."),
    entity_id: str | None = typer.Option(None, "--entity-id", help="The entity's key"),
    limit: int = typer.Option(100, min=1, max=1000, help="Most cases"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """Cases, most pressing first (by SLA due time)."""
    if url is not None:
        params = {
            k: v
            for k, v in (
                ("status", status),
                ("queue", queue),
                ("assignee", assignee),
                ("entity_type", entity_type),
                ("entity_id", entity_id),
                ("limit", str(limit)),
            )
            if v is not None
        }
        found = call_api("GET", url, "/v1/cases", params=params)["cases"]
    else:
        where = CaseFilter(status, queue, assignee, entity_type, entity_id, limit)
        now = datetime.now(UTC)
        found = _locally(
            project, data_dir, lambda cases: [c.as_dict(now) for c in cases.list(where)]
        )
    _print_cases(found)


@app.command()
def show(
    case_id: int = typer.Argument(..., help="Case number"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """One case: its alerts, comments and audit trail."""
    from decisionloop.cli.main import console

    if url is not None:
        view = call_api("GET", url, f"/v1/cases/{case_id}")
    else:
        now = datetime.now(UTC)
        view = _locally(project, data_dir, lambda cases: cases.view(case_id).as_dict(now))
    _print_cases([view])
    if view.get("disposition"):
        console.print(f"disposition: {view['disposition']} — {view['disposition_reason']}")
    alerts = Table("alert", "source", "event", "type", "occurred (UTC)", "outcome", "rules")
    for a in view["alerts"]:
        alerts.add_row(
            str(a["id"]),
            a["source"],
            a["event_id"],
            a["event_type"],
            a["occurred_at"][:19],
            a["outcome"] or "",
            ", ".join(a["rule_ids"]),
        )
    console.print(alerts)
    for c in view["comments"]:
        console.print(f"[bold]{c['author']}[/] {c['at'][:19]}: {c['text']}", highlight=False)
    audit = Table("when (UTC)", "who", "action", "detail")
    for e in view["audit"]:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(e["detail"].items()))
        audit.add_row(e["at"][:19], e["actor"], e["action"], detail)
    console.print(audit)


@app.command()
def assign(
    case_id: int = typer.Argument(...),
    assignee: str = typer.Argument(..., help="Who works the case; '-' hands it back"),
    author: str = AuthorOpt,
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """Assign a case to someone (or '-' for nobody)."""
    from decisionloop.cli.main import console

    who = None if assignee == "-" else assignee
    if url is not None:
        body = {"assignee": who, "author": author}
        call_api("POST", url, f"/v1/cases/{case_id}/assign", json=body)
    else:
        _locally(project, data_dir, lambda cases: cases.assign(case_id, who, author))
    console.print(f"case {case_id} assigned to {who or 'nobody'}")


@app.command()
def comment(
    case_id: int = typer.Argument(...),
    text: str = typer.Argument(..., help="The comment"),
    author: str = AuthorOpt,
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """Add a comment to a case."""
    from decisionloop.cli.main import console

    if url is not None:
        body = {"author": author, "text": text}
        call_api("POST", url, f"/v1/cases/{case_id}/comments", json=body)
    else:
        _locally(project, data_dir, lambda cases: cases.comment(case_id, author, text))
    console.print(f"commented on case {case_id}")


@app.command()
def status(
    case_id: int = typer.Argument(...),
    new_status: str = typer.Argument(..., metavar="STATUS", help="open or investigating"),
    author: str = AuthorOpt,
    reason: str = typer.Option("", help="Why (kept in the audit trail)"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """Move a case between open and investigating (closing takes `cases dispose`)."""
    from decisionloop.cli.main import console

    if url is not None:
        body = {"status": new_status, "author": author, "reason": reason}
        call_api("POST", url, f"/v1/cases/{case_id}/status", json=body)
    else:
        _locally(
            project, data_dir, lambda cases: cases.set_status(case_id, new_status, author, reason)
        )
    console.print(f"case {case_id} is {new_status}")


@app.command()
def dispose(
    case_id: int = typer.Argument(...),
    disposition: str = typer.Argument(..., help="fraud, not_fraud or inconclusive"),
    author: str = AuthorOpt,
    reason: str = typer.Option(..., "--reason", help="Why (kept with the labels it writes)"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """Close an investigated case with a disposition; writes event and entity labels."""
    from decisionloop.cases.disposition import dispose as run_disposition
    from decisionloop.cli.main import console, guarded, settings_for
    from decisionloop.runtime import open_service

    if url is not None:
        body = {"disposition": disposition, "author": author, "reason": reason}
        done = call_api("POST", url, f"/v1/cases/{case_id}/disposition", json=body)
    else:
        settings = settings_for(project, data_dir)
        service = guarded(lambda: open_service(settings))
        try:
            hook = service.alerts
            assert hook is not None  # opened by the runtime
            disposed = guarded(
                lambda: asyncio.run(
                    run_disposition(service, hook.cases, case_id, disposition, author, reason)
                )
            )
            done = disposed.as_dict(datetime.now(UTC))
        finally:
            service.close()
    console.print(
        f"case {case_id} closed as {done['disposition']}: {len(done['event_labels'])} event "
        f"label(s), entity label {done['entity_label'] if done['entity_label'] else 'none'}"
    )


def monitor(
    start: str = typer.Option(..., "--from", help="First day (YYYY-MM-DD, UTC) or ISO time"),
    end: str = typer.Option(..., "--to", help="Last day, included (YYYY-MM-DD) or ISO time"),
    rules: list[Path] | None = typer.Option(
        None, "--rules", help="Monitoring rule-set file (repeatable); default: monitoring/*.yaml"
    ),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
) -> None:
    """Run monitoring rule sets over a past period of stored events; their hits open alerts
    and cases. Running a window again opens no duplicate alert."""
    from decisionloop.cases.monitor import monitor as run_monitor
    from decisionloop.cases.monitor import recorded_run
    from decisionloop.cli.backtest import no_history, parse_day
    from decisionloop.cli.main import console, guarded, settings_for
    from decisionloop.runtime import open_ops_store

    settings = settings_for(project, data_dir)
    period_start = guarded(lambda: parse_day(start, "--from", end_of_day=False))
    period_end = guarded(lambda: parse_day(end, "--to", end_of_day=True))
    source = settings.source_path()
    if source is None:
        guarded(no_history)
        return
    ops = guarded(lambda: open_ops_store(settings))
    try:
        cases = guarded(lambda: case_service(settings, ops))
        # Recorded with the service's runs (GET /v1/monitoring/runs), failed ones included.
        done, _ = guarded(
            lambda: recorded_run(
                cases,
                "cli",
                period_start,
                period_end,
                lambda: run_monitor(
                    source, settings.project_dir, period_start, period_end, cases, rules, ops
                ),
            )
        )
    finally:
        ops.close()
    table = Table("rule", "hits")
    for name, hits in done.hits.items():
        table.add_row(name, f"{hits:,}")
    console.print(table)
    console.print(
        f"{done.events:,} events: {done.alerts:,} new alert(s), {done.repeats:,} already known; "
        f"{len(done.cases_opened):,} case(s) opened, {len(done.cases_touched):,} touched"
    )


def _print_cases(found: list[dict[str, Any]]) -> None:
    from decisionloop.cli.main import console

    if not found:
        console.print("no cases")
        return
    table = Table(
        "case", "status", "queue", "priority", "entity", "assignee", "due (UTC)", "disposition"
    )
    for c in found:
        due = c["due_at"][:16].replace("T", " ") + (" overdue" if c["overdue"] else "")
        table.add_row(
            str(c["id"]),
            c["status"],
            c["queue"],
            c["priority"],
            f"{c['entity_type']}/{c['entity_id']}",
            c["assignee"] or "",
            due,
            c["disposition"] or "",
        )
    console.print(table)
