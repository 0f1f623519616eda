"""``decisionloop rules``: ruleset history, diff, publish and rollback (see docs/rules.md)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import typer
from rich.table import Table
from rich.text import Text

from decisionloop.errors import ConfigError, DefinitionError, Problem
from decisionloop.rules.versions import RuleHistory, RuleVersion, write_rule_files
from decisionloop.settings import Settings

app = typer.Typer(help="Ruleset versions: history, diff, publish, rollback.", no_args_is_help=True)

ProjectOpt = typer.Option(None, "--project", "-p", help="Project folder (default: settings)")
DataOpt = typer.Option(None, "--data-dir", help="Where the history lives (default: settings)")
ReloadOpt = typer.Option(
    None, "--reload", help="Then reload the rules of the service at this URL (http://host:port)"
)


def _settings(project: Path | None, data_dir: Path | None) -> tuple[Settings, RuleHistory]:
    # Imported here: cli.main registers this sub-app, so a top-level import would be circular.
    from decisionloop.cli.main import settings_for

    settings = settings_for(project, data_dir)
    return settings, RuleHistory.in_data_dir(settings.data_dir)


@app.command()
def history(project: Path | None = ProjectOpt, data_dir: Path | None = DataOpt) -> None:
    """List the recorded ruleset versions, oldest first."""
    from decisionloop.cli.main import console

    _, rule_history = _settings(project, data_dir)
    versions = rule_history.versions()
    if not versions:
        console.print("no ruleset versions yet: record one with `decisionloop rules publish`")
        return
    table = Table("version", "when (UTC)", "author", "hash", "+/-", "message")
    for version in versions:
        added, removed = _counts(version.diff)
        table.add_row(
            version.id,
            version.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            version.author,
            version.content_hash,
            f"[green]+{added}[/] [red]-{removed}[/]",
            version.message,
        )
    console.print(table)


@app.command()
def diff(
    old: str | None = typer.Argument(None, help="Version to compare from (default: the latest)"),
    new: str | None = typer.Argument(None, help="Version to compare to (default: the folder)"),
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
) -> None:
    """Unified diff between two versions, or between a version and the working folder."""
    from decisionloop.cli.main import console, guarded

    settings, rule_history = _settings(project, data_dir)
    if new is None:
        text = guarded(lambda: rule_history.diff_working(settings.project_dir, old))
    else:
        text = guarded(lambda: rule_history.diff(old or "", new))
    if not text:
        console.print("no differences")
        return
    console.print(_coloured(text), end="", soft_wrap=True)


@app.command()
def publish(
    author: str | None = typer.Option(None, help="Default: git config user.name, else OS user"),
    message: str = typer.Option("", "--message", "-m", help="Why the rules changed"),
    reload: str | None = ReloadOpt,
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
) -> None:
    """Validate the project, then record its rules and strategies as a new version."""
    from decisionloop.cli.main import console, guarded
    from decisionloop.engine.engine import compile_project

    settings, rule_history = _settings(project, data_dir)
    guarded(lambda: compile_project(settings.project_dir))
    version = guarded(lambda: rule_history.record(settings.project_dir, author, message))
    _report(version, rule_history, "published")
    if reload:
        _reload(reload)
    elif version is not None:
        console.print("a running service takes it with `POST /v1/admin/reload` or a restart")


@app.command()
def rollback(
    version: str = typer.Argument(..., help="The version to go back to (v3 or 3)"),
    author: str | None = typer.Option(None, help="Default: git config user.name, else OS user"),
    reload: str | None = ReloadOpt,
    project: Path | None = ProjectOpt,
    data_dir: Path | None = DataOpt,
) -> None:
    """Write a version's rule and strategy files back and record that as a new version.

    The project as it would be after the rollback is validated first: features may have changed
    since that version, and a rollback that leaves the project invalid is refused.
    """
    from decisionloop.cli.main import guarded

    settings, rule_history = _settings(project, data_dir)
    files = guarded(lambda: rule_history.files(version))
    guarded(lambda: _validate_with(settings.project_dir, files))
    recorded = guarded(lambda: rule_history.rollback(settings.project_dir, version, author))
    _report(recorded, rule_history, "rolled back")
    if reload:
        _reload(reload)


def _validate_with(project_dir: Path, files: dict[str, bytes]) -> None:
    """Compile a copy of the project whose ruleset is ``files``."""
    from decisionloop.engine.engine import compile_project

    with tempfile.TemporaryDirectory(prefix="decisionloop-rollback-") as scratch:
        copy = Path(scratch) / "project"
        shutil.copytree(project_dir, copy)
        write_rule_files(copy, files)
        try:
            compile_project(copy)
        except DefinitionError as exc:
            raise DefinitionError(
                f"the project would be invalid after this rollback: {len(exc.problems)} "
                "problem(s); nothing was changed",
                exc.problems,
            ) from exc


def _report(version: RuleVersion | None, rule_history: RuleHistory, verb: str) -> None:
    from decisionloop.cli.main import console

    if version is None:
        latest = rule_history.latest()
        same = f" {latest.id}" if latest else ""
        console.print(f"nothing to record: the rules equal the latest version{same}")
        return
    added, removed = _counts(version.diff)
    console.print(
        f"[green]{verb}[/] {version.id} by {version.author} ({version.content_hash}, "
        f"+{added} -{removed} lines)",
        highlight=False,
    )


def _reload(url: str) -> None:
    """Ask a running service to apply the folder's rules; its refusal is reported like ours."""
    from decisionloop.cli.main import console, fail

    endpoint = url.rstrip("/") + "/v1/admin/reload"
    try:
        response = httpx.post(endpoint, timeout=60)
    except httpx.HTTPError as exc:
        fail(ConfigError("could not reach the service", [Problem(endpoint, str(exc))]))
        return
    body = response.json() if response.headers.get("content-type", "").startswith("app") else {}
    if response.status_code != 200:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        problems = [
            Problem(p.get("where", ""), p.get("reason", "")) for p in error.get("problems", [])
        ]
        message = error.get("message", f"HTTP {response.status_code}")
        code = error.get("code", "")
        fail(DefinitionError(f"the service refused the reload ({code}): {message}", problems))
    for name, strategy_version in body.get("strategies", {}).items():
        console.print(f"[green]reloaded[/] {name}: {strategy_version}", highlight=False)


def _counts(diff_text: str) -> tuple[int, int]:
    lines = diff_text.splitlines()
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    return added, removed


_STYLES = (("+++", "bold"), ("---", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"))


def _coloured(diff_text: str) -> Text:
    text = Text()
    for line in diff_text.splitlines(keepends=True):
        style = next((s for prefix, s in _STYLES if line.startswith(prefix)), "")
        text.append(line, style=style)
    return text
