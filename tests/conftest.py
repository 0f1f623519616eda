"""Shared fixtures: an example project in a temp folder, services and API clients over it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from decisionloop.api.app import create_app
from decisionloop.cli.main import app
from decisionloop.engine.service import DecisionService
from decisionloop.project.scaffold import init_project
from decisionloop.runtime import open_service
from decisionloop.settings import Settings, load_settings


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    target = tmp_path / "project"
    init_project(target)
    return target


def make_settings(project_dir: Path, data_dir: Path, **extra: Any) -> Settings:
    return load_settings(project_dir=project_dir, data_dir=data_dir, **extra)


@pytest.fixture
def settings(project_dir: Path, tmp_path: Path) -> Settings:
    return make_settings(project_dir, tmp_path / "state")


@pytest.fixture
def service(settings: Settings) -> Iterator[DecisionService]:
    svc = open_service(settings)
    yield svc
    svc.close()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    svc = open_service(settings)
    with TestClient(create_app(svc, settings)) as test_client:
        yield test_client


def transaction(event_id: str, **fields: Any) -> dict[str, Any]:
    """A valid transaction of the example project; keyword arguments override fields."""
    event: dict[str, Any] = {
        "event_id": event_id,
        "type": "transaction",
        "occurred_at": "2026-06-01T12:00:00+00:00",
        "customer_id": "C000001",
        "account_id": "A000001-1",
        "amount": 42.5,
        "currency": "EUR",
        "channel": "card_present",
        "direction": "debit",
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not ...}


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No decisionloop.yaml from the working directory, no DECISIONLOOP_* from the environment."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("DECISIONLOOP_")]:
        monkeypatch.delenv(name)


def cli(*args: object) -> Result:
    """Run the command line in-process; a wide terminal so that rich does not wrap lines."""
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "2000"})


def plain(text: str) -> str:
    return ANSI.sub("", text)
