"""``decisionloop features suggest``: write a starter features file into the project folder."""

from __future__ import annotations

from pathlib import Path

import typer

from decisionloop.errors import ConfigError, Problem

app = typer.Typer(help="Feature definitions: suggest a starter set.", no_args_is_help=True)


@app.command()
def suggest(
    output: Path = typer.Option(
        Path("features/suggested.yaml"), "--output", "-o", help="File, relative to the project"
    ),
    event_type: str | None = typer.Option(
        None, "--event-type", help="The decided type (default: the only one with a strategy)"
    ),
    label: str = typer.Option("fraud", "--label", help="The label the label rates count"),
    label_delay: str = typer.Option(
        "7d",
        "--label-delay",
        help="Label rates count only events at least this old (their labels have had time to "
        "arrive); 0d: windows ending at the event",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file"),
    project: Path | None = typer.Option(None, "--project", "-p", help="Project folder"),
) -> None:
    """Counts, sums and averages over 1, 7 and 30 days per entity, label rates (over events
    older than --label-delay), time of day, weekend and amount-versus-own-history features, as
    editable templates. The project is validated with the file in place; if it would not
    compile, nothing is written."""
    from decisionloop.cli.main import console, guarded, settings_for
    from decisionloop.engine.engine import compile_project
    from decisionloop.features.suggest import suggest_features
    from decisionloop.project.loader import load_project

    settings = settings_for(project, None)
    root = settings.project_dir
    target = output if output.is_absolute() else root / output
    if target.exists() and not force:
        guarded(lambda: _exists(target))
    loaded = guarded(lambda: load_project(root))
    suggestion = guarded(
        lambda: suggest_features(loaded, event_type, label, label_delay=label_delay)
    )
    previous = target.read_text() if target.exists() else None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(suggestion.text)
    try:
        _, engine = guarded(lambda: compile_project(root))
    except BaseException:  # an invalid project (exit 2) or anything else: leave it as it was
        if previous is None:
            target.unlink()
        else:
            target.write_text(previous)
        console.print(f"[red]not written:[/] {target} would make the project invalid")
        raise
    console.print(
        f"[green]wrote[/] {target}: starter features of {suggestion.event_type} events over "
        f"{', '.join(suggestion.entities)}; the project now has {len(engine.features.names)} "
        "feature names. Edit the file, then `decisionloop validate`."
    )


def _exists(target: Path) -> None:
    raise ConfigError(
        "file exists", [Problem(str(target), "use --force to overwrite, or --output")]
    )
