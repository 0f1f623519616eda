"""``decisionloop init``: write the working example project into a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from decisionloop.errors import ConfigError, Problem

EXAMPLE = Path(__file__).parent / "example"


def init_project(target: Path, force: bool = False) -> list[Path]:
    """Copy the example project; refuse to overwrite an existing project unless ``force``."""
    if (target / "project.yaml").exists() and not force:
        raise ConfigError(
            "a project already exists here",
            [Problem(str(target / "project.yaml"), "exists; pass --force to overwrite")],
        )
    written = []
    for source in sorted(EXAMPLE.rglob("*")):
        if source.is_dir() or "__pycache__" in source.parts:
            continue
        destination = target / source.relative_to(EXAMPLE)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        written.append(destination)
    return written
