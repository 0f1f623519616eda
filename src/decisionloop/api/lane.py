"""The event lane: the four endpoints that carry events, answered before FastAPI's stack.

``/v1/decide``, ``/v1/decide/batch``, ``/v1/events`` and ``/v1/stream`` take every event the
service sees. Through FastAPI a request crosses a dozen middleware and routing layers (and, per
request, FastAPI's OpenTelemetry checks) that cost more CPU than deciding the event (profiled:
about three quarters of the request on the event loop). Their bodies are raw JSON that the
project's catalog validates anyway, so FastAPI adds nothing here: the application
(:class:`decisionloop.api.app.DecisionApp`) hands these paths to the lane first, which reads the
body with a size limit, decodes it with orjson, runs the endpoint and writes the answer.
Everything else (reads, ``/docs``, ``/metrics``, the live page) goes through FastAPI, and
:func:`openapi_paths` documents the lane on ``/docs``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from starlette.types import Message, Receive, Scope, Send

from decisionloop.engine.service import error_answer
from decisionloop.errors import DecisionLoopError, InputError, PayloadTooLargeError, Problem

log = logging.getLogger(__name__)
_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True)
class EventEndpoint:
    """One POST endpoint of the lane: its path, its documentation and what it runs."""

    path: str
    summary: str
    description: str
    tag: str
    body: Literal["one", "many", "one_or_many"]
    run: Callable[[Any], Awaitable[Any]]


class EventLane:
    """Serves the :class:`EventEndpoint` paths in front of the rest of the application.

    Errors the service raises on purpose become the usual error body and status; anything else
    is logged with its traceback and answered 500 with the same error shape (code DL000).
    """

    def __init__(
        self,
        endpoints: Sequence[EventEndpoint],
        limit: int,
        on_error: Callable[[DecisionLoopError], None],
    ) -> None:
        self.endpoints = {e.path: e for e in endpoints}
        self.limit = limit
        self.on_error = on_error

    async def serve(
        self, endpoint: EventEndpoint, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if scope["method"] != "POST":
            headers = [_JSON, (b"allow", b"POST")]
            await _send(send, 405, orjson.dumps({"detail": "Method Not Allowed"}), headers)
            return
        try:
            body = await self._read(scope, receive)
            if body is None:  # the client went away: nobody to answer
                return
            status, content = 200, await endpoint.run(decode(body))
        except DecisionLoopError as exc:
            self.on_error(exc)
            status, content = exc.http_status, error_answer(exc)
        except Exception as exc:
            log.exception("%s failed", endpoint.path)
            internal = DecisionLoopError(
                "internal error", [Problem(endpoint.path, f"{type(exc).__name__}; see the log")]
            )
            self.on_error(internal)
            status, content = internal.http_status, error_answer(internal)
        await _send(send, status, orjson.dumps(content), [_JSON])

    async def _read(self, scope: Scope, receive: Receive) -> bytearray | None:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                raise too_large(self.limit)
        body = bytearray()
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            body += chunk
            if len(body) > self.limit:
                raise too_large(self.limit)
            if not message.get("more_body", False):
                return body


async def _send(
    send: Send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [*headers, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def decode(body: bytes | bytearray) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            "body is not valid JSON", [Problem("body", f"{exc.msg} at position {exc.pos}")]
        ) from exc


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        "body too large", [Problem("body", f"larger than the {limit} byte limit")]
    )


def openapi_paths(
    endpoints: Sequence[EventEndpoint], event_schemas: list[dict[str, Any]], max_batch: int
) -> dict[str, Any]:
    """OpenAPI ``paths`` entries for the lane: request bodies carry every event type's schema."""
    one: dict[str, Any] = {"oneOf": event_schemas}
    many: dict[str, Any] = {"type": "array", "maxItems": max_batch, "items": one}
    bodies = {"one": one, "many": many, "one_or_many": {"oneOf": [one, many]}}
    error = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, Any] = {}
    for e in endpoints:
        paths[e.path] = {
            "post": {
                "tags": [e.tag],
                "summary": e.summary,
                "description": e.description,
                "operationId": e.path.strip("/").replace("/", "_"),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": bodies[e.body]}},
                },
                "responses": {
                    "200": {"description": "Answers, in the order of the events"},
                    **{
                        str(status): {
                            "description": reason,
                            "content": {"application/json": {"schema": error}},
                        }
                        for status, reason in (
                            (409, "event_id stored earlier without a decision"),
                            (413, "body or batch too large"),
                            (422, "invalid JSON or events, with every field path and reason"),
                        )
                    },
                },
            }
        }
    return paths


ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "stable code, see docs/errors.md"},
                "message": {"type": "string"},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "where": {"type": "string"},
                            "reason": {"type": "string"},
                        },
                        "required": ["where", "reason"],
                    },
                },
            },
            "required": ["code", "message", "problems"],
        }
    },
    "required": ["error"],
}
