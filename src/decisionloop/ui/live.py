"""The live page: decisions per second, outcome mix, latest decisions with reasons, top rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from decisionloop.engine.service import DecisionService

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def mount_live_page(app: FastAPI, service: DecisionService) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def live(request: Request) -> Any:
        return templates.TemplateResponse(request, "live.html", {"summary": service.summary()})

    @app.get("/ui/summary", response_class=HTMLResponse, include_in_schema=False)
    def summary_fragment(request: Request) -> Any:
        return templates.TemplateResponse(request, "_summary.html", {"summary": service.summary()})

    @app.get("/v1/summary", tags=["operations"])
    def summary() -> Any:
        """Totals, outcome mix, top rules and the latest decisions (what the live page shows)."""
        return service.summary()
