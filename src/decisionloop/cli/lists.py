"""``decisionloop lists``: create managed lists, add and remove values, show them and their audit.

Like ``decisionloop labels``: the store directly, or a running service with ``--url``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table

from decisionloop.cli.labels import (
    AuthorOpt,
    DataOpt,
    ProjectOpt,
    ReasonOpt,
    UrlOpt,
    call_api,
    open_store,
    print_audit,
    run,
)
from decisionloop.ops.index import LookupIndex
from decisionloop.ops.lists import ListService
from decisionloop.ops.store import ListItem

T = TypeVar("T")

app = typer.Typer(help="Managed block/allow lists: create, add, remove, show, audit.")


def _service(project: Path | None, data_dir: Path | None) -> ListService:
    store, _ = open_store(project, data_dir)
    return ListService(store, LookupIndex())


def _locally(project: Path | None, data_dir: Path | None, action: Callable[[ListService], T]) -> T:
    """Run one action on the store of the settings (reported like any error), then close it."""
    lists = _service(project, data_dir)
    try:
        result: T = run(lambda: action(lists))
        return result
    finally:
        lists.store.close()


@app.command()
def create(
    name: str = typer.Argument(..., help="List name, e.g. blocked_ips"),
    author: str = AuthorOpt,
    kind: str = typer.Option("custom", help="What the values are: ip, device, account ..."),
    description: str = typer.Option("", help="What the list is for"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """Create a list."""
    from decisionloop.cli.main import console

    if url is not None:
        body = {"name": name, "kind": kind, "description": description, "author": author}
        call_api("POST", url, "/v1/lists", json=body)
    else:
        _locally(project, data_dir, lambda lists: lists.create(name, kind, description, author))
    console.print(f"created list {name}")


@app.command()
def add(
    name: str = typer.Argument(...),
    value: str = typer.Argument(...),
    author: str = AuthorOpt,
    reason: str = ReasonOpt,
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """Add a value to a list."""
    from decisionloop.cli.main import console

    if url is not None:
        body = {"value": value, "reason": reason, "author": author}
        call_api("POST", url, f"/v1/lists/{name}/items", json=body)
    else:
        _locally(project, data_dir, lambda lists: lists.add(name, value, author, reason))
    console.print(f"added {value} to {name}")


@app.command()
def remove(
    name: str = typer.Argument(...),
    value: str = typer.Argument(...),
    author: str = AuthorOpt,
    reason: str = ReasonOpt,
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
    url: str | None = UrlOpt,
) -> None:
    """Take a value off a list (its history stays)."""
    from decisionloop.cli.main import console

    if url is not None:
        params = {"author": author, "reason": reason}
        call_api("DELETE", url, f"/v1/lists/{name}/items/{value}", params=params)
    else:
        _locally(project, data_dir, lambda lists: lists.remove(name, value, author, reason))
    console.print(f"removed {value} from {name}")


@app.command()
def show(
    name: str | None = typer.Argument(None, help="A list; without it, every list"),
    history: bool = typer.Option(False, "--history", help="Include removed values"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
) -> None:
    """Every list, or the values of one list."""
    from decisionloop.cli.main import console

    lists = _service(project, data_dir)
    try:
        if name is None:
            table = Table("list", "kind", "author", "created (UTC)", "description")
            for x in run(lists.lists):
                table.add_row(
                    x.name, x.kind, x.author, f"{x.created_at:%Y-%m-%d %H:%M:%S}", x.description
                )
            console.print(table)
            return
        items: list[ListItem] = run(lambda: lists.items(name, history))
    finally:
        lists.store.close()
    table = Table("value", "author", "added (UTC)", "reason", "removed")
    for item in items:
        removed = item.removed
        table.add_row(
            item.value,
            item.author,
            f"{item.created_at:%Y-%m-%d %H:%M:%S}",
            item.reason,
            f"{removed.at:%Y-%m-%d %H:%M} by {removed.by}: {removed.reason}" if removed else "",
        )
    console.print(table)


@app.command()
def audit(
    name: str = typer.Argument(...),
    limit: int = typer.Option(100, min=1, help="Most entries, latest first"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
) -> None:
    """Every change to a list, latest first."""
    print_audit(_locally(project, data_dir, lambda lists: lists.audit(name, limit)))
