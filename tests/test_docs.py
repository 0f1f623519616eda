"""Docs kept complete by tests: every error code, setting, command and route is documented."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute

from decisionloop.api.app import create_app
from decisionloop.cli.main import app as cli
from decisionloop.engine.service import DecisionService
from decisionloop.errors import ALL_ERRORS
from decisionloop.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_error_code_is_documented() -> None:
    text = (DOCS / "errors.md").read_text()
    for error in ALL_ERRORS:
        assert f"| {error.code} | `{error.__name__}` | {error.http_status} |" in text


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"| `{name}` |" in text, name


def test_every_command_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    for command in cli.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        assert f"`decisionloop {name}" in text, name


def test_every_route_is_documented(service: DecisionService, settings: Settings) -> None:
    text = (DOCS / "api.md").read_text()
    app = create_app(service, settings)
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods - {"HEAD"}:
                assert f"`{method} {route.path}`" in text, route.path
    for endpoint in app.state.event_endpoints:
        assert f"`POST {endpoint.path}`" in text, endpoint.path
