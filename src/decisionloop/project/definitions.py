"""The shapes of a project's definitions, as written in its YAML files.

These are declarations only: names, types and SQL texts. Compiling them (event validators, feature
state, rule code) happens in the packages that own each concern.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = r"^[a-z][a-z0-9_]{0,62}$"
_NAME_RE = re.compile(NAME)
FieldType = Literal["string", "integer", "number", "boolean", "timestamp", "enum"]
RuleStatus = Literal["draft", "shadow", "active", "retired"]
DEFAULT_OUTCOMES = ["approve", "challenge", "review", "decline"]
# Fields every event carries whatever its type; declared fields may not reuse these names.
RESERVED_FIELDS = ("event_id", "type", "occurred_at")
WINDOW_RE = re.compile(r"^(\d+)(s|m|h|d)$")
WINDOW_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Feature aggregations that read no field: they count events or measure their times.
FIELDLESS = ("count", "first_seen_age", "time_since_last", "labelled_count", "labelled_share")
# Label-aware aggregations: events of the window labelled ``label`` by a later ``label`` event.
LABELLED = ("labelled_count", "labelled_share")
# Link aggregation: distinct neighbour entities of the window carrying a risk label (ops store) in
# force at the event's time (features/links.py).
NEIGHBOURS = "labelled_neighbours"
LABEL_READERS = (*LABELLED, NEIGHBOURS)


def window_seconds(window: str) -> int:
    match = WINDOW_RE.match(window)
    if match is None:
        raise ValueError(f"window {window!r} must look like 10m, 1h, 24h or 7d")
    return int(match.group(1)) * WINDOW_SECONDS[match.group(2)]


def _check_windows(windows: list[str]) -> list[str]:
    for window in windows:
        window_seconds(window)
    return windows


# One or more windows (10m, 1h, 7d ...), as features and feature templates declare them.
Windows = Annotated[list[str], Field(min_length=1), AfterValidator(_check_windows)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(Strict):
    type: FieldType
    required: bool = False
    description: str = ""
    values: list[str] | None = Field(default=None, description="Allowed values of an enum")
    min: float | None = None
    max: float | None = None
    max_length: int = Field(default=256, ge=1, le=65536)

    @field_validator("values")
    @classmethod
    def _values_not_empty(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and not values:
            raise ValueError("an enum needs at least one value")
        return values


class EntitySpec(Strict):
    key: str = Field(pattern=NAME, description="The event field that identifies the entity")
    description: str = ""


class EventTypeSpec(Strict):
    description: str = ""
    entities: dict[str, Literal["required", "optional"]] = Field(default_factory=dict)
    fields: dict[str, FieldSpec] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _field_names(cls, fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for name in fields:
            if not _NAME_RE.match(name):
                raise ValueError(f"field name {name!r} must match {NAME}")
            if name in RESERVED_FIELDS:
                raise ValueError(f"field name {name!r} is reserved for every event")
        return fields


class FeatureSpec(Strict):
    """A windowed aggregate per entity. Expanded over windows: ``<entity>.<name>_<window>``."""

    name: str = Field(pattern=NAME)
    entity: str
    aggregation: Literal[
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "distinct_count",
        "stddev",
        "first_seen_age",
        "time_since_last",
        "labelled_count",
        "labelled_share",
        "labelled_neighbours",
    ]
    field: str | None = None
    label: str | None = Field(
        default=None,
        description="The label that labelled_count/labelled_share/labelled_neighbours look for",
    )
    neighbour: str | None = Field(
        default=None, description="labelled_neighbours: the entity whose key `field` holds"
    )
    windows: Windows
    label_delay: str | None = Field(
        default=None,
        description="labelled_count/labelled_share: move each window back by this delay (7d), "
        "so that only events old enough for their labels to have arrived are counted",
    )
    event_types: list[str] = Field(min_length=1)
    filter: str | None = Field(default=None, description="SQL predicate over the event")
    include_current: bool = True
    description: str = ""

    @field_validator("label_delay")
    @classmethod
    def _delay(cls, delay: str | None) -> str | None:
        if delay is not None:
            window_seconds(delay)  # 0d (no delay), 12h, 7d ...
        return delay

    @property
    def label_delay_seconds(self) -> int:
        return 0 if self.label_delay is None else window_seconds(self.label_delay)

    @model_validator(mode="after")
    def _label(self) -> FeatureSpec:
        if self.aggregation in LABEL_READERS and not self.label:
            raise ValueError(f"{self.aggregation} needs a `label` (e.g. label: fraud)")
        if self.label is not None and self.aggregation not in LABEL_READERS:
            raise ValueError(
                "`label` is only read by labelled_count, labelled_share and labelled_neighbours"
            )
        if self.aggregation == NEIGHBOURS and not self.neighbour:
            raise ValueError("labelled_neighbours needs a `neighbour` entity (e.g. account)")
        if self.neighbour is not None and self.aggregation != NEIGHBOURS:
            raise ValueError("`neighbour` is only read by labelled_neighbours")
        if self.label_delay is not None and self.aggregation not in LABELLED:
            raise ValueError("`label_delay` is only read by labelled_count and labelled_share")
        return self


class RiskLabelSpec(Strict):
    """A risk label a rule attaches, when it fires, to an entity of the event it decided."""

    entity: str
    label: str = Field(pattern=NAME)
    ttl: str = "30d"

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, ttl: str) -> str:
        window_seconds(ttl)  # 30m, 12h, 30d ...
        return ttl


class RuleSpec(Strict):
    id: str = Field(pattern=NAME)
    description: str = ""
    owner: str = ""
    when: str
    outcome: str | None = None
    score: float = 0.0
    status: RuleStatus = "active"
    version: int = Field(default=1, ge=1)
    labels: list[RiskLabelSpec] = Field(default_factory=list)
    # Cases (docs/cases.md): a firing rule opens an alert when it asks, whatever the outcome.
    alert: bool = False
    queue: str | None = Field(
        default=None, pattern=NAME, description="The case queue of its alerts (implies alert)"
    )

    @property
    def opens_alert(self) -> bool:
        return self.alert or self.queue is not None


class RuleSetSpec(Strict):
    name: str = Field(pattern=NAME)
    description: str = ""
    rules: list[RuleSpec] = Field(default_factory=list)


class ThresholdSpec(Strict):
    score: float
    outcome: str


ModelStatus = Literal["active", "shadow", "retired"]


class ModelThresholdSpec(Strict):
    """A model probability at or above ``score`` asks for ``outcome`` (most severe wins)."""

    score: float = Field(ge=0.0, le=1.0)
    outcome: str


class ModelRefSpec(Strict):
    """A registered model version attached to a strategy (see docs/models.md)."""

    name: str = Field(pattern=NAME)
    version: int = Field(ge=1)
    status: ModelStatus = Field(
        default="shadow",
        description="active: its thresholds decide; shadow: scored and recorded, no effect; "
        "retired: not loaded",
    )
    thresholds: list[ModelThresholdSpec] = Field(default_factory=list)
    contributions: int = Field(
        default=3, ge=0, le=50, description="Top feature contributions kept in the reason"
    )
    timeout_ms: float = Field(
        default=50.0,
        gt=0.0,
        le=1000.0,
        description="A score that took longer is discarded: the decision is rules-only, degraded",
    )


class StrategySpec(Strict):
    """How one event type is decided: which rule sets run and how their outcomes combine."""

    event_type: str
    version: int = Field(default=1, ge=1)
    description: str = ""
    outcomes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OUTCOMES),
        min_length=1,
        description="Least to most severe; the first is the default outcome",
    )
    rule_sets: list[str] = Field(default_factory=list)
    thresholds: list[ThresholdSpec] = Field(default_factory=list)
    models: list[ModelRefSpec] = Field(default_factory=list)


class ProjectSpec(Strict):
    name: str = Field(pattern=NAME)
    description: str = ""
    allowed_lateness: str = Field(
        default="5m",
        description="How far behind the latest event time an event may arrive and still see "
        "exactly the offline feature values (see features/semantics.py)",
    )

    @field_validator("allowed_lateness")
    @classmethod
    def _lateness(cls, lateness: str) -> str:
        window_seconds(lateness)
        return lateness
