"""``decisionloop labels``: add, remove and show risk labels on entities, and their audit trail.

Without ``--url`` the commands write the operational store directly (``ops_store_url`` or
``<data_dir>/ops.sqlite``): a service running on that store sees the change after its next start.
With ``--url`` they go through a running service's API, whose rules see the change at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import typer
from rich.table import Table

from decisionloop.errors import (
    ALL_ERRORS,
    DecisionLoopError,
    NotFoundError,
    Problem,
    StorageError,
)
from decisionloop.ops.index import LookupIndex
from decisionloop.ops.labels import LabelService, NewLabel
from decisionloop.ops.store import AuditEntry, OpsStore

T = TypeVar("T")

app = typer.Typer(help="Risk labels on entities: add, remove, show, audit.", no_args_is_help=True)

ProjectOpt = typer.Option(None, "--project", "-p", help="Project folder (default: settings)")
DataOpt = typer.Option(None, "--data-dir", help="Where state files live (default: settings)")
UrlOpt = typer.Option(None, "--url", help="Go through the running service at this URL")
AuthorOpt = typer.Option(..., "--author", help="Who makes the change (kept in the audit trail)")
ReasonOpt = typer.Option(..., "--reason", help="Why (kept in the audit trail)")


def open_store(project: Path | None, data_dir: Path | None) -> tuple[OpsStore, list[str]]:
    """The operational store of the settings, and the entity names the project declares."""
    from decisionloop.cli.main import guarded, settings_for
    from decisionloop.project.loader import load_project
    from decisionloop.runtime import open_ops_store

    settings = settings_for(project, data_dir)
    entities = guarded(lambda: list(load_project(settings.project_dir).entities))
    return guarded(lambda: open_ops_store(settings)), entities


def call_api(method: str, url: str, path: str, **options: Any) -> Any:
    """One API call; an error answer becomes the same report as a local error (exit 2)."""
    from decisionloop.cli.main import fail

    try:
        response = httpx.request(method, url.rstrip("/") + path, timeout=10.0, **options)
    except httpx.HTTPError as exc:
        fail(StorageError("service unreachable", [Problem(url, str(exc))]))
    if response.status_code >= 400:
        body = response.json().get("error", {})
        # The service's error class by its code, so the report reads as a local one would.
        kind = {e.code: e for e in ALL_ERRORS}.get(body.get("code"), DecisionLoopError)
        problems = [Problem(p["where"], p["reason"]) for p in body.get("problems", [])]
        fail(kind(body.get("message", response.text), problems))
    return response.json()


def run(action: Any) -> Any:
    from decisionloop.cli.main import guarded

    return guarded(action)


def _locally(project: Path | None, data_dir: Path | None, action: Callable[[LabelService], T]) -> T:
    """Run one action on the store of the settings (reported like any error), then close it."""
    store, entities = open_store(project, data_dir)
    try:
        result: T = run(lambda: action(LabelService(store, LookupIndex(), entities)))
        return result
    finally:
        store.close()


@app.command()
def add(
    entity_type: str = typer.Argument(..., help="Entity type (customer, device, ip ...)"),
    entity_id: str = typer.Argument(..., help="The entity's key"),
    label: str = typer.Argument(..., help="Label name, e.g. mule_suspect"),
    author: str = AuthorOpt,
    reason: str = ReasonOpt,
    source: str = typer.Option("analyst", help="rule, model, analyst or api"),
    ttl: str | None = typer.Option(None, help="Expire after 30m, 12h, 7d ..."),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """Attach a label to an entity."""
    from decisionloop.cli.main import console

    new = NewLabel(label, reason, author, source, None, ttl)
    if url is not None:
        body = {"label": label, "reason": reason, "author": author, "source": source, "ttl": ttl}
        added = call_api("POST", url, f"/v1/entities/{entity_type}/{entity_id}/labels", json=body)
        console.print(f"added {added['label']} to {entity_type} {entity_id} (id {added['id']})")
        return
    stored = _locally(project, data_dir, lambda labels: labels.add(entity_type, entity_id, new))
    console.print(f"added {stored.label} to {entity_type} {entity_id} (id {stored.id})")


@app.command()
def remove(
    entity_type: str = typer.Argument(...),
    entity_id: str = typer.Argument(...),
    label: str = typer.Argument(...),
    author: str = AuthorOpt,
    reason: str = ReasonOpt,
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """End a label on an entity (its history stays)."""
    from decisionloop.cli.main import console

    if url is not None:
        path = f"/v1/entities/{entity_type}/{entity_id}/labels/{label}"
        call_api("DELETE", url, path, params={"author": author, "reason": reason})
    else:
        _locally(
            project,
            data_dir,
            lambda labels: labels.remove(entity_type, entity_id, label, author, reason),
        )
    console.print(f"removed {label} from {entity_type} {entity_id}")


@app.command()
def show(
    entity_type: str = typer.Argument(...),
    entity_id: str = typer.Argument(...),
    history: bool = typer.Option(False, "--history", help="Include removed and expired labels"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
) -> None:
    """The labels of an entity: in force now, or all of them with --history."""
    from decisionloop.cli.main import console

    labels = _locally(project, data_dir, lambda labels: labels.of(entity_type, entity_id, history))
    if not labels:
        console.print(f"{entity_type} {entity_id} has no labels")
        return
    table = Table("label", "source", "author", "created (UTC)", "expires", "reason", "removed")
    for x in labels:
        end = x.removed
        removed = f"{end.at:%Y-%m-%d %H:%M} by {end.by}: {end.reason}" if end else ""
        table.add_row(
            x.label,
            x.source,
            x.author,
            f"{x.created_at:%Y-%m-%d %H:%M:%S}",
            f"{x.expires_at:%Y-%m-%d %H:%M:%S}" if x.expires_at else "",
            x.reason,
            removed,
        )
    console.print(table)


@app.command()
def audit(
    entity_type: str = typer.Argument(...),
    entity_id: str = typer.Argument(...),
    limit: int = typer.Option(100, min=1, help="Most entries, latest first"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
) -> None:
    """Every change to the labels of an entity, latest first."""
    store, entities = open_store(project, data_dir)
    try:
        if entity_type not in entities:
            run(lambda: _unknown(entity_type, entities))
        entries = run(lambda: LabelService(store, LookupIndex(), entities).audit(
            entity_type, entity_id, limit
        ))  # fmt: skip
    finally:
        store.close()
    print_audit(entries)


def _unknown(entity_type: str, entities: list[str]) -> None:
    known = ", ".join(sorted(entities))
    raise NotFoundError(
        "unknown entity type", [Problem("type", f"no entity {entity_type!r}; declared: {known}")]
    )


def print_audit(entries: list[AuditEntry]) -> None:
    from decisionloop.cli.main import console

    if not entries:
        console.print("no changes recorded")
        return
    table = Table("when (UTC)", "who", "action", "subject", "detail")
    for entry in entries:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(entry.detail.items()))
        table.add_row(
            f"{entry.at:%Y-%m-%d %H:%M:%S}", entry.actor, entry.action, entry.subject, detail
        )
    console.print(table)
