"""HTTP API: a thin layer over :class:`DecisionService`.

The endpoints that carry events are served by :mod:`decisionloop.api.lane` in front of FastAPI;
reads, operations, ``/docs`` and the live page are FastAPI routes. Bodies are read raw,
size-checked and decoded with orjson, then validated by the project's event catalog, so that errors
name field paths the project declares (``body[3].amount``) and never surface as a 500. Every error
body has the same shape: ``{"error": {code, message, problems}}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from decisionloop import __version__
from decisionloop.api.lane import ERROR_SCHEMA, EventEndpoint, EventLane, openapi_paths
from decisionloop.api.schema import event_schemas
from decisionloop.engine.service import DecisionService, error_answer
from decisionloop.errors import DecisionLoopError, InputError, PayloadTooLargeError, Problem
from decisionloop.settings import Settings

DESCRIPTION = "Real-time decisions on bank events, with reasons and a latency trace."


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def event_endpoints(service: DecisionService, max_batch: int) -> list[EventEndpoint]:
    """The POST endpoints that take events; each runs on the decoded JSON body."""

    async def decide(obj: Any) -> Any:
        return (await service.handle([obj], "decide", batch=False))[0]

    async def decide_batch(obj: Any) -> Any:
        return {"decisions": await service.handle(_as_list(obj, max_batch), "decide")}

    async def ingest(obj: Any) -> Any:
        if isinstance(obj, dict):
            return (await service.handle([obj], "ingest", batch=False))[0]
        return {"results": await service.handle(_as_list(obj, max_batch), "ingest")}

    async def stream(obj: Any) -> Any:
        return {"results": await service.handle(_as_list(obj, max_batch), "stream")}

    return [
        EventEndpoint(
            "/v1/decide",
            "Decide one event",
            "Outcome, score, reasons and a per-stage latency trace. A repeated event_id returns "
            "the original decision.",
            "decisions",
            "one",
            decide,
        ),
        EventEndpoint(
            "/v1/decide/batch",
            "Decide a list of events",
            "Decisions come back in the same order; the batch is made durable together.",
            "decisions",
            "many",
            decide_batch,
        ),
        EventEndpoint(
            "/v1/events",
            "Store events without deciding",
            "Labels, logins ...: one object (one result) or a list (results in order).",
            "events",
            "one_or_many",
            ingest,
        ),
        EventEndpoint(
            "/v1/stream",
            "Store and decide an ordered stream",
            "An ordered list of mixed events, as a replay sends them: the events whose type has "
            "a strategy are decided, the others stored; results come back in the same order.",
            "events",
            "many",
            stream,
        ),
    ]


class DecisionApp(FastAPI):
    """FastAPI with the event lane in front: its paths skip the middleware stack."""

    lane: EventLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.lane is not None and scope["type"] == "http":
            endpoint = self.lane.endpoints.get(scope["path"])
            if endpoint is not None:
                await self.lane.serve(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(service: DecisionService, settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = DecisionApp(
        title="decisionloop",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.service = service

    def count_rejected(exc: DecisionLoopError) -> None:
        service.metrics.rejected.inc(exc.code)

    @app.exception_handler(DecisionLoopError)
    async def on_error(request: Request, exc: DecisionLoopError) -> Response:
        count_rejected(exc)
        return JSONResponse(error_answer(exc), status_code=exc.http_status)

    endpoints = event_endpoints(service, settings.max_batch_events)
    app.state.event_endpoints = endpoints
    app.lane = EventLane(endpoints, settings.max_body_bytes, count_rejected)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes
            )
            lane = openapi_paths(
                endpoints, event_schemas(service.engine.catalog), settings.max_batch_events
            )
            schema["paths"] = {**lane, **schema["paths"]}
            schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/v1/decisions/{decision_id}", tags=["decisions"])
    async def get_decision(decision_id: str) -> Response:
        """A stored decision, as it was returned."""
        return JSONResponse(await service.decision(decision_id))

    # The operational endpoints are async: answered on the event loop that owns the service's
    # state, with no thread hop and nothing read while it is being written.
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Response:
        return JSONResponse(
            {"status": "ok", "version": __version__, "events": service.events_stored}
        )

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        service.metrics.group_commits.set(getattr(service.source, "commits", 0))
        service.metrics.entities.set(service.engine.features.entities())
        service.metrics.late_events.set_total(service.engine.features.late_events)
        for model, degraded in service.engine.model_degraded.items():
            service.metrics.model_degraded.set_total(degraded, model)
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    from decisionloop.api.admin import admin_router
    from decisionloop.api.cases import cases_router
    from decisionloop.api.entities import entities_router
    from decisionloop.ui.live import mount_live_page

    app.include_router(admin_router(service, settings))
    app.include_router(entities_router(service))
    app.include_router(cases_router(service))
    mount_live_page(app, service)
    return app


def _as_list(obj: Any, limit: int) -> list[Any]:
    if not isinstance(obj, list):
        raise InputError("expected a JSON array of events", [Problem("body", "not an array")])
    if len(obj) > limit:
        raise PayloadTooLargeError(
            "batch too large", [Problem("body", f"{len(obj)} events; at most {limit} per request")]
        )
    return obj
