"""How alerts become cases: queues, priorities, SLAs and labels, from ``<project>/cases.yaml``.

The file is optional (every key has a default) and kept in git with the other definitions::

    default_queue: fraud              # alerts whose rule names no queue
    alert_outcomes: [review]          # decisions with these outcomes open an alert
    case_entity: {transaction: customer}   # the entity a type's alerts group by (see below)
    priority_by_outcome: {decline: high, review: medium, challenge: low}
    sla:                              # time to disposition, per queue and priority
      default: {critical: 4h, high: 1d, medium: 3d, low: 7d}
      aml: {high: 2d}                 # merged over the default
    labels: {fraud: fraud, not_fraud: not_fraud}   # disposition -> label name (inconclusive: none)
    label_ttl: 180d                   # how long an entity label from a case stays in force
    monitoring:                       # post-event monitoring run by the service itself
      every: 1h                       # period of event time per run (omit: only on demand)
      lag: 15m                        # wait this long past a period's end for late events

**The case entity.** Alerts group into one open case per (entity, queue). The entity of an event
is ``case_entity[type]`` when configured, else the first *required* entity its type declares (in
declaration order: ``customer`` for the example's transactions), else the first it declares; if
the event does not carry that key, the first entity whose key it does carry; with none, the event
itself (``event/<event_id>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from decisionloop.domain.events import EventType
from decisionloop.errors import DefinitionError
from decisionloop.project.definitions import NAME, window_seconds
from decisionloop.project.located import YamlSyntaxError, load_yaml

CONFIG_FILE = "cases.yaml"
Priority = Literal["low", "medium", "high", "critical"]
PRIORITIES: tuple[Priority, ...] = ("low", "medium", "high", "critical")  # least urgent first
Disposition = Literal["fraud", "not_fraud", "inconclusive"]
DISPOSITIONS: tuple[Disposition, ...] = ("fraud", "not_fraud", "inconclusive")
DEFAULT_SLA: dict[Priority, str] = {"critical": "4h", "high": "1d", "medium": "3d", "low": "7d"}
DEFAULT_PRIORITIES: dict[str, Priority] = {
    "decline": "high",
    "review": "medium",
    "challenge": "low",
}
DEFAULT_LABELS: dict[Disposition, str] = {"fraud": "fraud", "not_fraud": "not_fraud"}


def _check_window(value: str) -> str:
    window_seconds(value)
    return value


class MonitoringConfig(BaseModel):
    """Scheduled post-event monitoring (docs/cases.md): the service runs the project's
    ``monitoring/`` rule sets over each ``every`` of event time once ``lag`` has passed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: str | None = None
    lag: str = "15m"

    @field_validator("every")
    @classmethod
    def _every(cls, every: str | None) -> str | None:
        if every is not None and window_seconds(every) <= 0:
            raise ValueError("a monitoring period must be longer than 0s")
        return every

    @field_validator("lag")
    @classmethod
    def _lag(cls, lag: str) -> str:
        return _check_window(lag)

    @property
    def period(self) -> timedelta | None:
        return None if self.every is None else timedelta(seconds=window_seconds(self.every))

    @property
    def delay(self) -> timedelta:
        return timedelta(seconds=window_seconds(self.lag))


class CasesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_queue: str = Field(default="fraud", pattern=NAME)
    alert_outcomes: list[str] = Field(default_factory=lambda: ["review"])
    case_entity: dict[str, str] = Field(default_factory=dict)
    priority_by_outcome: dict[str, Priority] = Field(
        default_factory=lambda: dict(DEFAULT_PRIORITIES)
    )
    sla: dict[str, dict[Priority, str]] = Field(default_factory=dict)
    labels: dict[Disposition, str] = Field(default_factory=lambda: dict(DEFAULT_LABELS))
    label_ttl: str = "180d"
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @field_validator("sla")
    @classmethod
    def _sla_windows(cls, sla: dict[str, dict[Priority, str]]) -> dict[str, dict[Priority, str]]:
        for by_priority in sla.values():
            for window in by_priority.values():
                _check_window(window)
        return sla

    @field_validator("label_ttl")
    @classmethod
    def _ttl(cls, ttl: str) -> str:
        return _check_window(ttl)

    def priority(self, outcome: str | None) -> Priority:
        return self.priority_by_outcome.get(outcome or "", "medium")

    def label_for(self, disposition: str) -> str | None:
        """The label a disposition writes (none for ``inconclusive`` by default)."""
        return next((name for key, name in self.labels.items() if key == disposition), None)

    def sla_for(self, queue: str, priority: Priority) -> timedelta:
        """The queue's own SLA for the priority, else the ``default`` entry, else built in."""
        for table in (self.sla.get(queue, {}), self.sla.get("default", {}), DEFAULT_SLA):
            if priority in table:
                return timedelta(seconds=window_seconds(table[priority]))
        raise AssertionError("DEFAULT_SLA covers every priority")  # pragma: no cover

    def case_entity_of(
        self, event_type: EventType, values: Mapping[str, Any], event_id: str
    ) -> tuple[str, str]:
        """(entity type, entity id) that an event's alerts group by (see the module docstring)."""
        keys = event_type.entity_keys
        preferred = self.case_entity.get(event_type.name)
        if preferred is None:
            required = [e for e, key in keys.items() if key in event_type.required]
            preferred = next(iter(required or keys), "")
        if preferred in keys and values.get(keys[preferred]) is not None:
            return preferred, str(values[keys[preferred]])
        for entity, key in keys.items():
            if values.get(key) is not None:
                return entity, str(values[key])
        return "event", event_id


def load_cases_config(project_dir: Path, event_types: Mapping[str, EventType]) -> CasesConfig:
    """The project's ``cases.yaml`` (defaults without one); every problem with file:line."""
    path = Path(project_dir) / CONFIG_FILE
    if not path.is_file():
        return CasesConfig()
    try:
        document = load_yaml(path, Path(CONFIG_FILE))
    except YamlSyntaxError as exc:
        raise DefinitionError(f"problem in {CONFIG_FILE}", [exc.problem]) from exc
    try:
        config = CasesConfig.model_validate(document.data or {})
    except ValidationError as exc:
        problems = [
            document.problem(tuple(p for p in e["loc"] if isinstance(p, str | int)), e["msg"])
            for e in exc.errors()
        ]
        raise DefinitionError(f"{len(problems)} problem(s) in {CONFIG_FILE}", problems) from exc
    problems = []
    for type_name, entity in config.case_entity.items():
        found = event_types.get(type_name)
        if found is None:
            reason = f"no event type {type_name!r}"
        elif entity not in found.entity_keys:
            reason = f"{type_name!r} events carry no {entity!r} entity"
        else:
            continue
        problems.append(document.problem(("case_entity", type_name), reason))
    if problems:
        raise DefinitionError(f"{len(problems)} problem(s) in {CONFIG_FILE}", problems)
    return config
