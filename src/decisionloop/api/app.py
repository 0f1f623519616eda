"""HTTP API (FastAPI): a thin layer over :class:`DecisionService`.

Bodies are read raw, size-checked and decoded with orjson, then validated by the project's event
catalog, so that errors name field paths the project declares (``body[3].amount``) and never
surface as a 500. Every error body has the same shape: ``{"error": {code, message, problems}}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from decisionloop import __version__
from decisionloop.api.schema import event_schemas
from decisionloop.engine.service import DecisionService, error_answer
from decisionloop.errors import DecisionLoopError, InputError, PayloadTooLargeError, Problem
from decisionloop.settings import Settings


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            "body is not valid JSON", [Problem("body", f"{exc.msg} at position {exc.pos}")]
        ) from exc


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        "body too large", [Problem("body", f"larger than the {limit} byte limit")]
    )


def create_app(service: DecisionService, settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    schemas = event_schemas(service.engine.catalog)
    app = FastAPI(
        title="decisionloop",
        version=__version__,
        description="Real-time decisions on bank events, with reasons and a latency trace.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.service = service
    limit = settings.max_body_bytes

    @app.exception_handler(DecisionLoopError)
    async def on_error(request: Request, exc: DecisionLoopError) -> Response:
        service.metrics.rejected.labels(exc.code).inc()
        return JSONResponse(error_answer(exc), status_code=exc.http_status)

    one_event = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": schemas}}},
        }
    }
    many_events = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "maxItems": settings.max_batch_events,
                        "items": {"oneOf": schemas},
                    }
                }
            },
        }
    }

    @app.post("/v1/decide", openapi_extra=one_event, tags=["decisions"])
    async def decide(request: Request) -> Any:
        """Decide one event: outcome, score, reasons and a per-stage latency trace."""
        obj = await read_json(request, limit)
        return (await service.handle([obj], "decide", batch=False))[0]

    @app.post("/v1/decide/batch", openapi_extra=many_events, tags=["decisions"])
    async def decide_batch(request: Request) -> Any:
        """Decide a list of events; decisions come back in the same order."""
        objs = _as_list(await read_json(request, limit), settings.max_batch_events)
        return {"decisions": await service.handle(objs, "decide")}

    @app.post("/v1/events", openapi_extra=many_events, tags=["events"])
    async def ingest(request: Request) -> Any:
        """Store events without deciding (labels, logins ...): one object or a list."""
        obj = await read_json(request, limit)
        if isinstance(obj, dict):
            return (await service.handle([obj], "ingest", batch=False))[0]
        objs = _as_list(obj, settings.max_batch_events)
        return {"results": await service.handle(objs, "ingest")}

    @app.post("/v1/stream", openapi_extra=many_events, tags=["events"])
    async def stream(request: Request) -> Any:
        """An ordered list of mixed events, as a replay sends them: the events whose type has a
        strategy are decided, the others stored; results come back in the same order."""
        objs = _as_list(await read_json(request, limit), settings.max_batch_events)
        return {"results": await service.handle(objs, "stream")}

    @app.get("/v1/decisions/{decision_id}", tags=["decisions"])
    async def get_decision(decision_id: str) -> Any:
        """A stored decision, as it was returned."""
        return await service.decision(decision_id)

    # The operational endpoints are async: answered on the event loop that owns the service's
    # state, with no thread hop and nothing read while it is being written.
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Any:
        return {"status": "ok", "version": __version__, "events": service.events_stored}

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        service.metrics.group_commits.set(getattr(service.source, "commits", 0))
        service.metrics.entities.set(service.engine.features.entities())
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    from decisionloop.ui.live import mount_live_page

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
