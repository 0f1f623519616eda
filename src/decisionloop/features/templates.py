"""Feature templates: one declaration expanded over entities, aggregations (and its windows).

A features file may hold, beside ``features:``, a list of ``templates:``::

    templates:
      - name: "{field}_{aggregation}"       # the default; {entity} may be used too
        entities: [customer, account]
        aggregations: [sum, avg, max]
        field: amount
        windows: [1h, 24h, 7d]
        event_types: [transaction]
        filter: direction = 'debit'        # optional, as include_current and description

``label`` (and ``neighbour``) go to the aggregations that read them (``labelled_count``,
``labelled_share``, ``labelled_neighbours``) and may name the features (``{label}``)::

      - name: "{label}_{aggregation}"      # device.mule_labelled_neighbours_7d
        entities: [device, ip]
        aggregations: [labelled_neighbours]
        field: account_id
        neighbour: account
        label: mule

Each (entity, aggregation) pair becomes one :class:`FeatureSpec` named by the pattern, so the
feature names are the usual ``<entity>.<name>_<window>``: ``customer.amount_sum_24h``. The loader
expands templates while it reads the files; everything downstream sees plain definitions. Mistakes
are reported where they are written (``templates.0.aggregations.2``) with a suggestion, and an
expanded name defined twice names both origins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from difflib import get_close_matches
from typing import get_args

from pydantic import Field, ValidationError

from decisionloop.errors import Problem
from decisionloop.project.definitions import (
    FIELDLESS,
    LABEL_READERS,
    LABELLED,
    NEIGHBOURS,
    EntitySpec,
    EventTypeSpec,
    FeatureSpec,
    Strict,
    Windows,
)
from decisionloop.project.located import LocatedDocument, PathKey

AGGREGATIONS: tuple[str, ...] = get_args(FeatureSpec.model_fields["aggregation"].annotation)
PLACEHOLDERS = ("entity", "field", "aggregation", "label")


class FeatureTemplate(Strict):
    name: str = "{field}_{aggregation}"
    entities: list[str] = Field(min_length=1)
    aggregations: list[str] = Field(min_length=1)
    field: str | None = None
    label: str | None = Field(default=None, description="For the label-aware aggregations")
    neighbour: str | None = Field(default=None, description="For labelled_neighbours")
    windows: Windows
    label_delay: str | None = Field(
        default=None, description="For labelled_count and labelled_share (see FeatureSpec)"
    )
    event_types: list[str] = Field(min_length=1)
    filter: str | None = Field(default=None, description="SQL predicate over the event")
    include_current: bool = True
    description: str = ""


def expand_template(
    template: FeatureTemplate,
    doc: LocatedDocument,
    path: PathKey,
    entities: Mapping[str, EntitySpec],
    event_types: Mapping[str, EventTypeSpec],
) -> tuple[list[FeatureSpec], list[Problem]]:
    """The template's definitions, or none and every problem found in it."""
    problems: list[Problem] = []

    def complain(where: PathKey, reason: str) -> None:
        problems.append(doc.problem((*path, *where), reason))

    for j, entity in enumerate(template.entities):
        if entity not in entities:
            complain(("entities", j), _unknown("entity", entity, entities))
            continue
        for event_type in template.event_types:
            declared = event_types.get(event_type)
            if declared is not None and entity not in declared.entities:
                complain(("entities", j), f"event type {event_type!r} has no {entity!r} entity")
    fields: dict[str, set[str]] = {}  # per known event type: its fields and entity keys
    for k, event_type in enumerate(template.event_types):
        declared = event_types.get(event_type)
        if declared is None:
            complain(("event_types", k), _unknown("event type", event_type, event_types))
            continue
        keys = {entities[e].key for e in declared.entities if e in entities}
        fields[event_type] = keys | set(declared.fields)
    wanted = template.field
    if wanted is not None and fields and all(wanted not in f for f in fields.values()):
        complain(("field",), _unknown("field", wanted, set().union(*fields.values())))
    elif wanted is not None:
        for event_type in (t for t, f in fields.items() if wanted not in f):
            complain(("field",), f"event type {event_type!r} has no field {wanted!r}")
    for k, aggregation in enumerate(template.aggregations):
        if aggregation not in AGGREGATIONS:
            complain(("aggregations", k), _unknown("aggregation", aggregation, AGGREGATIONS))
        elif aggregation not in FIELDLESS and template.field is None:
            complain(("aggregations", k), f"{aggregation} needs a `field`")
        elif aggregation in LABEL_READERS and not template.label:
            complain(("aggregations", k), f"{aggregation} needs a `label` (e.g. label: fraud)")
        elif aggregation == NEIGHBOURS and not template.neighbour:
            complain(("aggregations", k), f"{aggregation} needs a `neighbour` entity")
    read_by = [a for a in template.aggregations if a in LABEL_READERS]
    if template.label is not None and not read_by:
        complain(("label",), f"no aggregation reads `label` (they are: {', '.join(LABEL_READERS)})")
    if template.label_delay is not None and not any(a in LABELLED for a in read_by):
        readers = ", ".join(LABELLED)
        complain(("label_delay",), f"no aggregation reads `label_delay` (only {readers})")
    if template.neighbour is not None and NEIGHBOURS not in template.aggregations:
        complain(("neighbour",), f"no aggregation reads `neighbour` (only {NEIGHBOURS} does)")
    elif template.neighbour is not None and template.neighbour not in entities:
        complain(("neighbour",), _unknown("neighbour entity", template.neighbour, entities))
    if problems:
        return [], problems
    specs = []
    for entity in template.entities:
        for aggregation in template.aggregations:
            try:
                name = template.name.format(
                    entity=entity,
                    field=template.field or "",
                    aggregation=aggregation,
                    label=template.label or "",
                )
            except (KeyError, IndexError, ValueError) as exc:
                names = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                complain(("name",), f"cannot expand the name ({exc}); it may use {names}")
                return [], problems
            try:
                specs.append(
                    FeatureSpec(
                        name=name,
                        entity=entity,
                        aggregation=aggregation,  # checked against AGGREGATIONS above
                        field=template.field,
                        label=template.label if aggregation in LABEL_READERS else None,
                        neighbour=template.neighbour if aggregation == NEIGHBOURS else None,
                        windows=template.windows,
                        label_delay=template.label_delay if aggregation in LABELLED else None,
                        event_types=template.event_types,
                        filter=template.filter,
                        include_current=template.include_current,
                        description=template.description,
                    )
                )
            except ValidationError as exc:
                complain(("name",), f"expands to {name!r}: {exc.errors()[0]['msg']}")
                return [], problems
    return specs, problems


Origin = tuple[FeatureSpec, LocatedDocument, PathKey]


def check_feature_names(origins: Iterable[Origin]) -> list[Problem]:
    """Each feature name defined once; definitions that share a ``name`` (one per entity, as a
    template over entities makes them) share their filter and event types too, because filters
    are compiled per name."""
    problems: list[Problem] = []
    by_name: dict[str, Origin] = {}
    by_full_name: dict[str, Origin] = {}
    for origin in origins:
        spec, doc, path = origin
        first = by_name.setdefault(spec.name, origin)
        if (first[0].filter, first[0].event_types) != (spec.filter, spec.event_types):
            problems.append(
                doc.problem(
                    path,
                    f"feature name {spec.name!r} is also used at {_where(first)} with another "
                    "filter or other event types; definitions sharing a name must share both",
                )
            )
        for window in spec.windows:
            full = f"{spec.entity}.{spec.name}_{window}"
            earlier = by_full_name.setdefault(full, origin)
            if earlier is not origin:
                problems.append(doc.problem(path, f"{full} is also defined at {_where(earlier)}"))
    return problems


def _where(origin: Origin) -> str:
    _, doc, path = origin
    position = doc.position(path)
    return f"{doc.file}:{position.line}:{position.column} ({'.'.join(map(str, path))})"


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    close = get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint}"
