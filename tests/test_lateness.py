"""The project's allowed lateness decides which events are late; late events are counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from decisionloop.api.app import create_app
from decisionloop.errors import DefinitionError
from decisionloop.runtime import open_service
from tests.conftest import make_settings, transaction


def late_events_after_an_hour_late_event(project_dir: Path, tmp_path: Path) -> str:
    settings = make_settings(project_dir, tmp_path / "state")
    with TestClient(create_app(open_service(settings), settings)) as client:
        on_time = transaction("t1", occurred_at="2026-06-01T12:00:00+00:00")
        late = transaction("t2", occurred_at="2026-06-01T11:00:00+00:00")
        assert client.post("/v1/decide", json=on_time).status_code == 200
        assert client.post("/v1/decide", json=late).status_code == 200  # stored and decided
        lines = client.get("/metrics").text.splitlines()
    (line,) = [x for x in lines if x.startswith("decisionloop_late_events_total")]
    return line


def test_an_event_beyond_the_default_lateness_is_counted(project_dir: Path, tmp_path: Path) -> None:
    assert late_events_after_an_hour_late_event(project_dir, tmp_path).endswith(" 1.0")


def test_the_project_declares_its_allowed_lateness(project_dir: Path, tmp_path: Path) -> None:
    spec = project_dir / "project.yaml"
    spec.write_text(spec.read_text() + "allowed_lateness: 2h\n")
    assert late_events_after_an_hour_late_event(project_dir, tmp_path).endswith(" 0.0")


def test_a_malformed_lateness_is_a_located_error(project_dir: Path, tmp_path: Path) -> None:
    spec = project_dir / "project.yaml"
    spec.write_text(spec.read_text() + "allowed_lateness: soon\n")
    with pytest.raises(DefinitionError) as raised:
        open_service(make_settings(project_dir, tmp_path / "state"))
    (problem,) = raised.value.problems
    assert problem.file is not None
    assert problem.file.endswith("project.yaml")
    assert "10m, 1h, 24h or 7d" in problem.reason
