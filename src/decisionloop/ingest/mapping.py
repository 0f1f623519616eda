"""Column mappings: turn rows of someone else's file (CSV, Parquet, JSONL) into our events.

A mapping is YAML checked by pydantic::

    event_type: transaction            # every row becomes this type
    event_id: "paysim-{row}"           # a template over {row} and the file's columns
    occurred_at: {column: step, unit: hours, origin: "2026-01-01T00:00:00Z"}
    fields:
      customer_id: {column: nameOrig}
      currency: {value: EUR}
      channel: {column: type, map: {TRANSFER: transfer, CASH_OUT: atm}}
    labels:                            # optional: a label event per row whose column matches
      - {column: isFraud, equals: 1, label: fraud, source: dataset, delay: 0h}

Values are converted to the type the event field declares; a row that fails conversion or
validation is reported with its row number and reason, and the good rows are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from decisionloop.domain.events import Event, EventCatalog, EventType, parse_timestamp
from decisionloop.errors import MappingError, Problem
from decisionloop.project.definitions import FieldSpec, window_seconds
from decisionloop.project.located import LocatedDocument, YamlSyntaxError, load_yaml

_TEMPLATE_FIELD = re.compile(r"\{(\w+)\}")
_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSource(_Strict):
    column: str | None = None
    value: Any = None
    map: dict[str, Any] | None = Field(default=None, description="Translate column values")
    default: Any = None


class TimeSource(_Strict):
    column: str
    unit: Literal["iso", "seconds", "minutes", "hours", "days"] = "iso"
    origin: str | None = Field(default=None, description="Time zero for numeric units")


class LabelSource(_Strict):
    column: str
    equals: Any
    label: str
    source: str = "import"
    entity: Literal["event"] = "event"
    delay: str = "0s"


class MappingSpec(_Strict):
    event_type: str
    event_id: str = Field(description="Template over {row} and column names")
    occurred_at: TimeSource
    fields: dict[str, ColumnSource]
    labels: list[LabelSource] = Field(default_factory=list)


@dataclass
class RowResult:
    row: int
    events: list[Event]
    problems: list[Problem]


class ColumnMapping:
    def __init__(
        self, spec: MappingSpec, catalog: EventCatalog, doc: LocatedDocument | None = None
    ) -> None:
        def locate(path: tuple[str, ...], reason: str) -> Problem:
            return doc.problem(path, reason) if doc else Problem(".".join(path), reason)

        problems: list[Problem] = []
        event_type = catalog.types.get(spec.event_type)
        if event_type is None:
            close = get_close_matches(spec.event_type, list(catalog.types), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            reason = f"{spec.event_type!r} is not a declared event type{hint}"
            raise MappingError(
                "mapping names an unknown event type", [locate(("event_type",), reason)]
            )
        for name in spec.fields:
            if name not in event_type.fields:
                close = get_close_matches(name, list(event_type.fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                reason = f"{spec.event_type!r} has no such field{hint}"
                problems.append(locate(("fields", name), reason))
        if spec.labels and "label" not in catalog.types:
            problems.append(locate(("labels",), "the project declares no 'label' event type"))
        if problems:
            raise MappingError("mapping does not fit the project", problems)
        self.spec = spec
        self.catalog = catalog
        self.event_type: EventType = event_type
        origin = spec.occurred_at.origin
        self.origin = parse_timestamp(origin) if origin else None
        if spec.occurred_at.unit != "iso" and self.origin is None:
            raise MappingError(
                "numeric time needs an origin",
                [locate(("occurred_at",), "`origin` is required when unit is not iso")],
            )

    @classmethod
    def load(cls, file: Path, catalog: EventCatalog) -> ColumnMapping:
        try:
            doc = load_yaml(file)
        except YamlSyntaxError as exc:
            raise MappingError("mapping is not valid YAML", [exc.problem]) from exc
        try:
            spec = TypeAdapter(MappingSpec).validate_python(doc.data or {})
        except ValidationError as exc:
            problems = [
                doc.problem(tuple(p for p in e["loc"] if isinstance(p, str | int)), e["msg"])
                for e in exc.errors()
            ]
            raise MappingError("mapping is invalid", problems) from exc
        return cls(spec, catalog, doc)

    def convert(self, rows: Iterable[Mapping[str, Any]], first_row: int = 1) -> Iterator[RowResult]:
        for number, row in enumerate(rows, start=first_row):
            yield self.convert_row(number, row)

    def convert_row(self, number: int, row: Mapping[str, Any]) -> RowResult:
        where = f"row {number}"
        problems: list[Problem] = []
        obj: dict[str, Any] = {"type": self.spec.event_type}
        try:
            obj["event_id"] = _template(self.spec.event_id, number, row)
            occurred_at = self._time(row)
            obj["occurred_at"] = occurred_at.isoformat()
        except (KeyError, ValueError) as exc:
            return RowResult(number, [], [Problem(where, _reason(exc))])
        for name, source in self.spec.fields.items():
            try:
                value = _value(source, row)
                if value is not None:
                    obj[name] = _coerce(value, self.event_type.fields[name])
            except (KeyError, ValueError) as exc:
                problems.append(Problem(f"{where}.{name}", _reason(exc)))
        if problems:
            return RowResult(number, [], problems)
        event, found = self.catalog.parse(obj, where)
        if event is None:
            return RowResult(number, [], found)
        events = [event]
        for label in self.spec.labels:
            if _same(row.get(label.column), label.equals):
                arrived = occurred_at + timedelta(seconds=window_seconds(label.delay))
                label_obj = {
                    "event_id": f"{event.event_id}:label:{label.label}",
                    "type": "label",
                    "occurred_at": arrived.isoformat(),
                    "entity_type": "event",
                    "entity_id": event.event_id,
                    "label": label.label,
                    "source": label.source,
                    "refers_to_event_id": event.event_id,
                }
                label_event, label_problems = self.catalog.parse(label_obj, f"{where}.label")
                if label_event is None:
                    return RowResult(number, [], label_problems)
                events.append(label_event)
        return RowResult(number, events, [])

    def _time(self, row: Mapping[str, Any]) -> datetime:
        spec = self.spec.occurred_at
        raw = row[spec.column]
        if spec.unit == "iso":
            return parse_timestamp(raw if isinstance(raw, str) else str(raw))
        assert self.origin is not None
        return self.origin + timedelta(seconds=float(raw) * _UNITS[spec.unit])


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"column {exc.args[0]!r} is missing"
    return str(exc)


def _template(template: str, number: int, row: Mapping[str, Any]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "row":
            return str(number)
        value = row[name]
        if value is None or value == "":
            raise ValueError(f"column {name!r} is empty; the event id needs it")
        return str(value)

    return _TEMPLATE_FIELD.sub(fill, template)


def _value(source: ColumnSource, row: Mapping[str, Any]) -> Any:
    if source.column is None:
        return source.value
    value = row[source.column]
    if value is None or value == "":
        return source.default
    if source.map is not None:
        key = str(value)
        if key not in source.map:
            if source.default is not None:
                return source.default
            raise ValueError(f"{value!r} has no entry in the mapping's `map`")
        return source.map[key]
    return value


def _coerce(value: Any, spec: FieldSpec) -> Any:
    """Convert file values (often strings) to the declared type, refusing what does not fit."""
    if spec.type in ("number", "integer") and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if spec.type == "integer":
            if not number.is_integer():
                raise ValueError(f"{value!r} is not an integer")
            return int(number)
        return number
    if spec.type == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.type == "boolean" and not isinstance(value, bool):
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "y", "t"):
            return True
        if text in ("0", "false", "no", "n", "f"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if spec.type in ("string", "enum") and not isinstance(value, str):
        return str(value)
    if spec.type == "timestamp" and isinstance(value, datetime):
        return value.isoformat()
    return value


def _same(value: Any, expected: Any) -> bool:
    return value == expected or (value is not None and str(value) == str(expected))
