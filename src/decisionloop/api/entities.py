"""HTTP routes for risk labels, managed lists and the entity view.

Thin: bodies and query values are checked here (every problem with its field path, in the error
shape of the whole API), the rest is :mod:`decisionloop.ops`. Store calls run in a worker thread
and are committed before the answer; the index the rules read is updated on the event loop.
Query values are taken as strings and checked here, so that a bad one is a DL300 like any other
input error rather than FastAPI's own 422 shape.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from decisionloop.api.app import JSONResponse
from decisionloop.domain.events import Event
from decisionloop.engine.service import DecisionService
from decisionloop.errors import InputError, Problem, StorageError
from decisionloop.ops.labels import LabelService, NewLabel, check_entity
from decisionloop.ops.lists import ListService
from decisionloop.storage.ports import StoredEvent


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LabelBody(StrictBody):
    label: str
    reason: str
    author: str
    source: str = "api"
    source_ref: str | None = None
    ttl: str | None = Field(default=None, description="how long it stays: 30m, 12h, 7d ...")


class ListBody(StrictBody):
    name: str
    kind: str = "custom"
    description: str = ""
    author: str


class ItemBody(StrictBody):
    value: str
    reason: str
    author: str


BodyModel = TypeVar("BodyModel", bound=StrictBody)


async def parse_body(request: Request, model: type[BodyModel]) -> BodyModel:
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError("body is not JSON", [Problem("body", str(exc))]) from exc
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", [Problem("body", "not an object")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(".".join(["body", *(str(p) for p in err["loc"])]), err["msg"])
            for err in exc.errors()
        ]
        raise InputError("invalid request body", problems) from exc


def _flag(value: str, where: str) -> bool:
    if value.lower() in ("", "0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise InputError("invalid query value", [Problem(where, f"expected true or false: {value!r}")])


def bounded_int(value: str, where: str, low: int, high: int) -> int:
    if value.isdigit() and low <= int(value) <= high:
        return int(value)
    raise InputError(
        "invalid query value", [Problem(where, f"expected a whole number {low}-{high}: {value!r}")]
    )


def _entity_keys(service: DecisionService) -> dict[str, str]:
    """Entity name -> key field, as the project's event types carry them."""
    keys: dict[str, str] = {}
    for event_type in service.engine.catalog.types.values():
        keys.update(event_type.entity_keys)
    return keys


def entities_router(service: DecisionService) -> APIRouter:
    router = APIRouter(tags=["labels and lists"])

    def labels() -> LabelService:
        if service.ops is None:
            raise StorageError("no operational store", [Problem("ops_store", "not opened")])
        return LabelService(service.ops, service.engine.lookups, _entity_keys(service))

    def lists() -> ListService:
        if service.ops is None:
            raise StorageError("no operational store", [Problem("ops_store", "not opened")])
        return ListService(service.ops, service.engine.lookups)

    @router.get("/v1/entities/{type}/{id}/labels")
    async def get_labels(type: str, id: str, history: str = "") -> Response:
        """Labels in force on the entity now; ``?history=true`` adds removed and expired ones."""
        found = await asyncio.to_thread(labels().of, type, id, _flag(history, "query.history"))
        return JSONResponse({"type": type, "id": id, "labels": [x.as_dict() for x in found]})

    @router.post("/v1/entities/{type}/{id}/labels", status_code=201)
    async def add_label(type: str, id: str, request: Request) -> Response:
        """Attach a label (reason, author, source, optional ttl); committed before the answer."""
        body = await parse_body(request, LabelBody)
        new = NewLabel(body.label, body.reason, body.author, body.source, body.source_ref, body.ttl)
        label = await labels().add_async(type, id, new)
        return JSONResponse(label.as_dict(), status_code=201)

    @router.delete("/v1/entities/{type}/{id}/labels/{label}")
    async def remove_label(
        type: str, id: str, label: str, author: str = "", reason: str = ""
    ) -> Response:
        """End the label (``?author=...&reason=...``); its history stays."""
        removed = await labels().remove_async(type, id, label, author, reason)
        return JSONResponse({"removed": [x.as_dict() for x in removed]})

    @router.get("/v1/lists")
    async def get_lists() -> Response:
        """Every managed list."""
        found = await asyncio.to_thread(lists().lists)
        return JSONResponse({"lists": [x.as_dict() for x in found]})

    @router.post("/v1/lists", status_code=201)
    async def create_list(request: Request) -> Response:
        """Create a list (name, kind, description, author)."""
        body = await parse_body(request, ListBody)
        created = await lists().create_async(body.name, body.kind, body.description, body.author)
        return JSONResponse(created.as_dict(), status_code=201)

    @router.get("/v1/lists/{name}/items")
    async def get_items(name: str, history: str = "") -> Response:
        """Items on the list now; ``?history=true`` adds removed ones."""
        found = await asyncio.to_thread(lists().items, name, _flag(history, "query.history"))
        return JSONResponse({"list": name, "items": [x.as_dict() for x in found]})

    @router.post("/v1/lists/{name}/items", status_code=201)
    async def add_item(name: str, request: Request) -> Response:
        """Add a value (value, reason, author); committed before the answer."""
        body = await parse_body(request, ItemBody)
        item = await lists().add_async(name, body.value, body.author, body.reason)
        return JSONResponse(item.as_dict(), status_code=201)

    @router.delete("/v1/lists/{name}/items/{value:path}")
    async def remove_item(name: str, value: str, author: str = "", reason: str = "") -> Response:
        """Take a value off the list (``?author=...&reason=...``); its history stays."""
        removed = await lists().remove_async(name, value, author, reason)
        return JSONResponse({"removed": [x.as_dict() for x in removed]})

    @router.get("/v1/entities/{type}/{id}")
    async def entity_view(type: str, id: str, days: str = "7", limit: str = "20") -> Response:
        """Current feature values, labels in force and the latest events of one entity."""
        look_back = bounded_int(days, "query.days", 1, 90)
        most = bounded_int(limit, "query.limit", 1, 200)
        keys = _entity_keys(service)
        check_entity(type, id, keys)
        features = current_features(service, keys[type], id)  # on the loop: it owns the state
        in_force = await asyncio.to_thread(labels().of, type, id)
        events = await asyncio.to_thread(
            recent_events, service, keys[type], id, timedelta(days=look_back), most
        )
        return JSONResponse(
            {
                "type": type,
                "id": id,
                "features": features,
                "labels": [x.as_dict() for x in in_force],
                "recent_events": events,
            }
        )

    return router


def current_features(service: DecisionService, key_field: str, entity_id: str) -> dict[str, Any]:
    """The entity's feature values as the next event would read them (without one's update),
    at the latest event time the engine has seen."""
    online = service.engine.features
    feeding = [f for f in online.features if f.key_field == key_field]
    if not feeding:
        return {}
    # No event seen yet: the watermark is its far-past start value; read as of now instead.
    at = _from_us(online.watermark) if online.watermark > 0 else datetime.now(UTC)
    probe = Event("entity-view", "", at, {key_field: entity_id}, {})
    values = online.observe(probe, update=False)
    return {name: values.get(name) for f in feeding for name in f.names}


def _from_us(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def recent_events(
    service: DecisionService, key_field: str, entity_id: str, look_back: timedelta, limit: int
) -> list[dict[str, Any]]:
    """The entity's latest events within ``look_back`` of the latest stored one, newest first."""
    latest = service.source.max_occurred_at()
    if latest is None:
        return []
    found: list[StoredEvent] = [
        stored
        for stored in service.source.scan(since=latest - look_back)
        if stored.payload.get(key_field) == entity_id
    ]
    found.sort(key=lambda s: (s.occurred_at, s.seq), reverse=True)
    return [
        {
            "event_id": s.event_id,
            "type": s.event_type,
            "occurred_at": s.occurred_at.isoformat(),
            "ingested_at": s.ingested_at.isoformat(),
            "payload": s.payload,
        }
        for s in found[:limit]
    ]
