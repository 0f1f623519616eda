"""JSON Schemas of the declared event types, for the OpenAPI page at ``/docs``."""

from __future__ import annotations

from typing import Any

from decisionloop.domain.events import EventCatalog
from decisionloop.project.definitions import FieldSpec

_JSON_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "timestamp": "string",
    "enum": "string",
}


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _JSON_TYPES[spec.type]}
    if spec.description:
        schema["description"] = spec.description
    if spec.type == "timestamp":
        schema["format"] = "date-time"
    if spec.type == "enum":
        schema["enum"] = list(spec.values or [])
    if spec.type == "string":
        schema["maxLength"] = spec.max_length
    if spec.min is not None:
        schema["minimum"] = spec.min
    if spec.max is not None:
        schema["maximum"] = spec.max
    return schema


def event_schemas(catalog: EventCatalog) -> list[dict[str, Any]]:
    schemas = []
    for name, event_type in sorted(catalog.types.items()):
        properties: dict[str, Any] = {
            "event_id": {"type": "string", "maxLength": 128},
            "type": {"const": name},
            "occurred_at": {"type": "string", "format": "date-time"},
        }
        properties.update({f: _field_schema(s) for f, s in event_type.fields.items()})
        schemas.append(
            {
                "title": name,
                "type": "object",
                "properties": properties,
                "required": ["event_id", "type", "occurred_at", *sorted(event_type.required)],
                "additionalProperties": False,
            }
        )
    return schemas
