"""Events: declared types compiled into fast validators that report every bad field at once.

An event on the wire is a flat JSON object: ``event_id``, ``type``, ``occurred_at``, the entity
keys its type declares (``customer_id``, ``device_id``, ``ip`` ...) and its attributes. Unknown
fields are refused rather than dropped: a misspelt attribute must not become a NULL feature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from difflib import get_close_matches
from typing import Any

from decisionloop.errors import EventValidationError, Problem
from decisionloop.project.definitions import (
    RESERVED_FIELDS,
    EntitySpec,
    EventTypeSpec,
    FieldSpec,
)

MAX_ID_LENGTH = 128
RESERVED = frozenset(RESERVED_FIELDS)
# A validator returns the normalised value, or raises ValueError with the reason.
Check = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event: normalised values plus the JSON object exactly as received."""

    event_id: str
    type: str
    occurred_at: datetime
    values: dict[str, Any]  # declared fields, normalised (timestamps as datetimes)
    raw: Mapping[str, Any]

    def get(self, name: str) -> Any:
        return self.values.get(name)


def parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 timestamp string, got {_json_type(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no timezone; add Z or an offset such as +01:00")
    return parsed.astimezone(UTC)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_for(spec: FieldSpec) -> Check:
    """Build the check for one declared field (built once per event type, not per event)."""
    if spec.type == "string":
        limit = spec.max_length

        def check_string(value: Any) -> Any:
            if not isinstance(value, str):
                raise ValueError(f"expected string, got {_json_type(value)}")
            if len(value) > limit:
                raise ValueError(f"string longer than {limit} characters")
            return value

        return check_string
    if spec.type == "enum":
        allowed = frozenset(spec.values or ())
        shown = ", ".join(spec.values or ())

        def check_enum(value: Any) -> Any:
            if value not in allowed or not isinstance(value, str):
                raise ValueError(f"{value!r} is not one of: {shown}")
            return value

        return check_enum
    if spec.type == "boolean":

        def check_bool(value: Any) -> Any:
            if not isinstance(value, bool):
                raise ValueError(f"expected boolean, got {_json_type(value)}")
            return value

        return check_bool
    if spec.type == "timestamp":
        return parse_timestamp
    low, high, integer = spec.min, spec.max, spec.type == "integer"

    def check_number(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected {spec.type}, got {_json_type(value)}")
        if integer and not isinstance(value, int):
            raise ValueError("expected integer, got a number with a fraction")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("number must be finite")
        if low is not None and value < low:
            raise ValueError(f"must be >= {low:g}")
        if high is not None and value > high:
            raise ValueError(f"must be <= {high:g}")
        return value

    return check_number


def _check_id(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"expected string, got {_json_type(value)}")
    if not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(f"must be 1 to {MAX_ID_LENGTH} characters")
    return value


@dataclass(frozen=True)
class EventType:
    name: str
    fields: dict[str, FieldSpec]  # entity keys included, as strings
    entity_keys: dict[str, str]  # entity name -> key field
    required: frozenset[str]
    checks: dict[str, Check]

    @classmethod
    def build(cls, name: str, spec: EventTypeSpec, entities: Mapping[str, EntitySpec]) -> EventType:
        fields: dict[str, FieldSpec] = {}
        entity_keys: dict[str, str] = {}
        for entity, presence in spec.entities.items():
            if entity not in entities:
                continue  # reported by the project loader; skipped so that validation goes on
            key = entities[entity].key
            entity_keys[entity] = key
            fields[key] = FieldSpec(
                type="string",
                required=presence == "required",
                description=f"key of {entity}",
                max_length=MAX_ID_LENGTH,
            )
        fields.update(spec.fields)
        required = frozenset(n for n, f in fields.items() if f.required)
        checks = {n: _check_for(f) for n, f in fields.items()}
        return cls(name, fields, entity_keys, required, checks)


class EventCatalog:
    """All declared event types; validates wire objects into :class:`Event`."""

    def __init__(self, types: Mapping[str, EventType]) -> None:
        self.types = dict(types)

    def validate(self, obj: Any, path: str = "body") -> Event:
        """Return the event or raise :class:`EventValidationError` listing every problem."""
        event, problems = self.parse(obj, path)
        if event is None:
            raise EventValidationError("event is invalid", problems)
        return event

    def parse(self, obj: Any, path: str = "body") -> tuple[Event | None, list[Problem]]:
        """One pass over the object: the event when valid, else every problem found."""
        if not isinstance(obj, dict):
            return None, [Problem(path, f"expected a JSON object, got {_json_type(obj)}")]
        problems: list[Problem] = []
        event_id = occurred_at = None
        try:
            event_id = _check_id(obj["event_id"])
        except KeyError:
            problems.append(Problem(f"{path}.event_id", "field required"))
        except ValueError as exc:
            problems.append(Problem(f"{path}.event_id", str(exc)))
        try:
            occurred_at = parse_timestamp(obj["occurred_at"])
        except KeyError:
            problems.append(Problem(f"{path}.occurred_at", "field required"))
        except ValueError as exc:
            problems.append(Problem(f"{path}.occurred_at", str(exc)))
        type_name = obj.get("type")
        event_type = self.types.get(type_name) if isinstance(type_name, str) else None
        if event_type is None:
            problems.append(Problem(f"{path}.type", self._unknown_type_reason(type_name)))
            return None, problems
        values: dict[str, Any] = {}
        checks = event_type.checks
        for name, value in obj.items():
            check = checks.get(name)
            if check is None:
                if name not in RESERVED:
                    problems.append(Problem(f"{path}.{name}", _unknown_field(name, event_type)))
            elif value is None:
                if name in event_type.required:
                    problems.append(Problem(f"{path}.{name}", "field required, got null"))
            else:
                try:
                    values[name] = check(value)
                except ValueError as exc:
                    problems.append(Problem(f"{path}.{name}", str(exc)))
        if not event_type.required <= obj.keys():
            for name in sorted(event_type.required - obj.keys()):
                problems.append(Problem(f"{path}.{name}", "field required"))
        if problems or event_id is None or occurred_at is None:
            return None, problems
        return Event(event_id, event_type.name, occurred_at, values, obj), []

    def _unknown_type_reason(self, type_name: Any) -> str:
        declared = sorted(self.types)
        if type_name is None:
            return f"field required; one of: {', '.join(declared)}"
        if not isinstance(type_name, str):
            return f"expected string, got {_json_type(type_name)}"
        close = get_close_matches(type_name, declared, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown event type {type_name!r}{hint} (declared: {', '.join(declared)})"


def _unknown_field(name: str, event_type: EventType) -> str:
    close = get_close_matches(name, list(event_type.fields), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown field for event type {event_type.name!r}{hint}"
