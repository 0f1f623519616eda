"""Load a project folder and report every definition error at once, with file, line and reason.

Layout (a folder kept in git, like a dbt or Feast repository)::

    project.yaml            name, description
    entities.yaml           entities: {customer: {key: customer_id}, ...}
    events/*.yaml           event_types: {transaction: {entities: ..., fields: ...}}
    features/*.yaml         features: [{name, entity, aggregation, field, windows, ...}],
                            templates: [...] (expanded here), derived: [{name, expression, ...}]
    rules/*.yaml            one rule set per file: {name, rules: [...]}
    strategies/*.yaml       one strategy per file: {event_type, rule_sets, thresholds, models, ...}
    models/<name>/v<N>/     trained model versions (``decisionloop train``; see ml/registry.py)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from decisionloop.errors import DefinitionError, ExpressionError, InputError, Problem
from decisionloop.features.derived import DerivedSpec
from decisionloop.features.links import link_problems
from decisionloop.features.templates import (
    FeatureTemplate,
    Origin,
    check_feature_names,
    expand_template,
)
from decisionloop.project.definitions import (
    FIELDLESS,
    LABELLED,
    EntitySpec,
    EventTypeSpec,
    FeatureSpec,
    ProjectSpec,
    RuleSetSpec,
    StrategySpec,
)
from decisionloop.project.located import LocatedDocument, YamlSyntaxError, load_yaml
from decisionloop.rules.expressions import Source, parse

T = TypeVar("T")


class _EntitiesFile(BaseModel, extra="forbid"):
    entities: dict[str, EntitySpec]


class _EventsFile(BaseModel, extra="forbid"):
    event_types: dict[str, EventTypeSpec]


class _FeaturesFile(BaseModel, extra="forbid"):
    features: list[FeatureSpec] = []
    templates: list[FeatureTemplate] = []
    derived: list[DerivedSpec] = []


@dataclass
class Project:
    """Definitions that parsed; cross-references are checked by :func:`check_references`."""

    root: Path
    spec: ProjectSpec
    entities: dict[str, EntitySpec] = field(default_factory=dict)
    event_types: dict[str, EventTypeSpec] = field(default_factory=dict)
    features: list[FeatureSpec] = field(default_factory=list)
    derived: list[DerivedSpec] = field(default_factory=list)  # expressions over features
    rule_sets: dict[str, RuleSetSpec] = field(default_factory=dict)
    strategies: dict[str, StrategySpec] = field(default_factory=dict)
    # Where each definition came from, for errors found after parsing (rule texts, references).
    documents: dict[str, LocatedDocument] = field(default_factory=dict)
    origins: dict[str, tuple[str, tuple[str | int, ...]]] = field(default_factory=dict)
    fingerprint: str = ""
    problems: list[Problem] = field(default_factory=list)  # kept when loaded with strict=False

    def event_type_named(self, event_type: str | None, where: str = "--event-type") -> str:
        """``event_type`` if the project declares it; without one, the only type a strategy
        decides. Commands that work on one decided type (evaluate, features suggest) ask this."""
        if event_type is None:
            decided = sorted(self.strategies)
            if len(decided) != 1:
                reason = f"the project decides {', '.join(decided) or 'no'} event types: choose one"
                raise InputError("which event type?", [Problem(where, reason)])
            return decided[0]
        if event_type not in self.event_types:
            known = ", ".join(sorted(self.event_types)) or "none"
            raise InputError("unknown event type", [Problem(where, f"declared: {known}")])
        return event_type

    def locate(self, key: str, *path: str | int) -> tuple[LocatedDocument, tuple[str | int, ...]]:
        doc_name, base = self.origins[key]
        return self.documents[doc_name], (*base, *path)

    def expression_source(self, key: str, path: tuple[str | int, ...]) -> Source:
        """Where an expression's text sits in its file, for errors inside the expression."""
        doc, full = self.locate(key, *path)
        line, column, block = doc.text_origin(full)
        kind, _, name = key.partition(":")
        if kind == "rule_set":
            label = f"rule {self.rule_sets[name].rules[int(path[1])].id}"
        else:
            label = f"{kind} {name}"
        return Source(label, str(doc.file), line, column, block)


class _Collector:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []
        self.documents: dict[str, LocatedDocument] = {}
        self.digest = hashlib.sha256()

    def files(self, pattern: str) -> Iterator[Path]:
        yield from sorted(self.root.glob(pattern))

    def load(self, file: Path, adapter: TypeAdapter[T]) -> T | None:
        display = file.relative_to(self.root)
        self.digest.update(str(display).encode() + b"\0" + file.read_bytes())
        try:
            doc = load_yaml(file, display)
        except YamlSyntaxError as exc:
            self.problems.append(exc.problem)
            return None
        self.documents[str(display)] = doc
        try:
            return adapter.validate_python(doc.data if doc.data is not None else {})
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
                self.problems.append(doc.problem(loc, _reason(err)))
            return None


def _reason(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    return str(err["msg"])


def load_project(root: Path, strict: bool = True) -> Project:
    """Parse every file and check references; raise one :class:`DefinitionError` listing all.

    With ``strict=False`` the problems are kept on the returned (partial) project instead, so that
    ``validate`` can go on to compile what did load and report everything in one run.
    """
    root = Path(root)
    if not (root / "project.yaml").is_file():
        raise DefinitionError(
            f"{root} is not a decisionloop project",
            [Problem(str(root), "no project.yaml here; create one with `decisionloop init DIR`")],
        )
    c = _Collector(root)
    spec = c.load(root / "project.yaml", TypeAdapter(ProjectSpec))
    project = Project(root=root, spec=spec or ProjectSpec(name="invalid"))
    if (root / "entities.yaml").is_file():
        entities = c.load(root / "entities.yaml", TypeAdapter(_EntitiesFile))
        if entities:
            project.entities = entities.entities
            for name in entities.entities:
                project.origins[f"entity:{name}"] = ("entities.yaml", ("entities", name))
    for file in c.files("events/*.yaml"):
        events = c.load(file, TypeAdapter(_EventsFile))
        for name, event_spec in (events.event_types if events else {}).items():
            project.event_types[name] = event_spec
            project.origins[f"event:{name}"] = (str(file.relative_to(root)), ("event_types", name))
    named: list[Origin] = []
    for file in c.files("features/*.yaml"):
        features = c.load(file, TypeAdapter(_FeaturesFile))
        if features is None:
            continue
        display = str(file.relative_to(root))
        for i, feature in enumerate(features.features):
            project.features.append(feature)
            project.origins[f"feature:{feature.name}"] = (display, ("features", i))
            named.append((feature, c.documents[display], ("features", i)))
        for i, template in enumerate(features.templates):
            doc, path = c.documents[display], ("templates", i)
            expanded, found = expand_template(
                template, doc, path, project.entities, project.event_types
            )
            c.problems.extend(found)
            for feature in expanded:
                project.features.append(feature)
                project.origins.setdefault(f"feature:{feature.name}", (display, path))
                named.append((feature, doc, path))
        for i, derived in enumerate(features.derived):
            project.derived.append(derived)
            project.origins[f"derived:{derived.name}"] = (display, ("derived", i))
    c.problems.extend(check_feature_names(named))
    for file in c.files("rules/*.yaml"):
        rule_set = c.load(file, TypeAdapter(RuleSetSpec))
        if rule_set:
            project.rule_sets[rule_set.name] = rule_set
            project.origins[f"rule_set:{rule_set.name}"] = (str(file.relative_to(root)), ())
    for file in c.files("strategies/*.yaml"):
        strategy = c.load(file, TypeAdapter(StrategySpec))
        if strategy:
            project.strategies[strategy.event_type] = strategy
            project.origins[f"strategy:{strategy.event_type}"] = (str(file.relative_to(root)), ())
    project.documents = c.documents
    project.fingerprint = c.digest.hexdigest()[:12]
    c.problems.extend(check_references(project))
    c.problems.extend(check_expression_syntax(project))
    project.problems = c.problems
    if c.problems and strict:
        raise DefinitionError(f"{len(c.problems)} problem(s) in {root}", c.problems)
    return project


def check_references(project: Project) -> list[Problem]:
    """Names that must exist elsewhere in the project: entities, event types, fields, rule sets."""
    problems: list[Problem] = []

    def complain(key: str, path: tuple[str | int, ...], reason: str) -> None:
        doc, full = project.locate(key, *path)
        problems.append(doc.problem(full, reason))

    keys_seen: dict[str, str] = {}
    for name, entity in project.entities.items():
        if entity.key in keys_seen:
            complain(f"entity:{name}", ("key",), f"key also used by {keys_seen[entity.key]!r}")
        keys_seen[entity.key] = name
    for name, event_type in project.event_types.items():
        for entity_name in event_type.entities:
            if entity_name not in project.entities:
                complain(
                    f"event:{name}",
                    ("entities", entity_name),
                    _unknown("entity", entity_name, project),
                )
            elif project.entities[entity_name].key in event_type.fields:
                complain(
                    f"event:{name}",
                    ("fields", project.entities[entity_name].key),
                    "this field is the key of an entity the type declares; list it there",
                )
        for field_name, field_spec in event_type.fields.items():
            if field_spec.type == "enum" and not field_spec.values:
                complain(f"event:{name}", ("fields", field_name), "an enum needs `values`")
    for feature in project.features:
        key = f"feature:{feature.name}"
        if feature.entity not in project.entities:
            complain(key, ("entity",), _unknown("entity", feature.entity, project))
        for i, event_type_name in enumerate(feature.event_types):
            feeding = project.event_types.get(event_type_name)
            if feeding is None:
                complain(key, ("event_types", i), f"unknown event type {event_type_name!r}")
                continue
            if feature.entity in project.entities and feature.entity not in feeding.entities:
                complain(
                    key,
                    ("event_types", i),
                    f"event type {event_type_name!r} has no {feature.entity!r} entity",
                )
            if feature.field and feature.field not in _field_names(project, event_type_name):
                complain(
                    key,
                    ("field",),
                    f"event type {event_type_name!r} has no field {feature.field!r}",
                )
        if feature.aggregation not in FIELDLESS and not feature.field:
            complain(key, ("aggregation",), f"{feature.aggregation} needs a `field`")
        entity_keys = {name: entity.key for name, entity in project.entities.items()}
        for where, reason in link_problems(feature, entity_keys):  # labelled_neighbours
            complain(key, (where,), reason)
        labels = project.event_types.get("label")  # what labelled_count/_share read
        if feature.aggregation in LABELLED and (
            labels is None
            or "label" not in labels.fields
            or not {"refers_to_event_id", "entity_id"} & set(labels.fields)
        ):
            complain(
                key,
                ("label",),
                "labelled aggregations need a `label` event type with a `label` field and a "
                "`refers_to_event_id` (or `entity_type` + `entity_id`) field",
            )
    for event_type_name, strategy in project.strategies.items():
        key = f"strategy:{event_type_name}"
        if event_type_name not in project.event_types:
            complain(key, ("event_type",), f"unknown event type {event_type_name!r}")
        for i, set_name in enumerate(strategy.rule_sets):
            if set_name not in project.rule_sets:
                complain(key, ("rule_sets", i), _unknown("rule set", set_name, project))
                continue
            for j, rule in enumerate(project.rule_sets[set_name].rules):
                if rule.outcome is not None and rule.outcome not in strategy.outcomes:
                    complain(
                        f"rule_set:{set_name}",
                        ("rules", j, "outcome"),
                        f"outcome {rule.outcome!r} is not one of the {event_type_name!r} "
                        f"strategy's outcomes: {', '.join(strategy.outcomes)}",
                    )
        for i, threshold in enumerate(strategy.thresholds):
            if threshold.outcome not in strategy.outcomes:
                complain(
                    key,
                    ("thresholds", i, "outcome"),
                    f"outcome {threshold.outcome!r} is not declared in `outcomes`",
                )
        attached: set[tuple[str, int]] = set()
        for i, model in enumerate(strategy.models):
            if (model.name, model.version) in attached:
                complain(key, ("models", i), f"model {model.name} v{model.version} listed twice")
            attached.add((model.name, model.version))
            for j, asks in enumerate(model.thresholds):
                if asks.outcome not in strategy.outcomes:
                    complain(
                        key,
                        ("models", i, "thresholds", j, "outcome"),
                        f"outcome {asks.outcome!r} is not declared in `outcomes`",
                    )
    seen_rules: dict[str, str] = {}
    for one_set in project.rule_sets.values():
        for j, rule in enumerate(one_set.rules):
            if rule.id in seen_rules:
                complain(
                    f"rule_set:{one_set.name}",
                    ("rules", j, "id"),
                    f"rule id also used in rule set {seen_rules[rule.id]!r}",
                )
            seen_rules[rule.id] = one_set.name
    return problems


def check_expression_syntax(project: Project) -> list[Problem]:
    """Parse every rule and filter (syntax and whitelist; names need the compiled project), so
    that a broken file elsewhere does not hide an expression error here."""
    problems: list[Problem] = []
    texts: list[tuple[str, tuple[str | int, ...], str]] = [
        (f"feature:{f.name}", ("filter",), f.filter) for f in project.features if f.filter
    ]
    for set_name, rule_set in project.rule_sets.items():
        for index, rule in enumerate(rule_set.rules):
            texts.append((f"rule_set:{set_name}", ("rules", index, "when"), rule.when))
    parsed: set[tuple[object, ...]] = set()
    for key, path, text in texts:
        where = (project.origins.get(key), path)
        if where in parsed:  # a template's filter: once, not once per expansion
            continue
        parsed.add(where)
        try:
            parse(text, project.expression_source(key, path))
        except ExpressionError as exc:
            problems.extend(exc.problems)
    return problems


def _field_names(project: Project, event_type: str) -> set[str]:
    spec = project.event_types[event_type]
    keys = {project.entities[e].key for e in spec.entities if e in project.entities}
    return keys | set(spec.fields)


def _unknown(kind: str, name: str, project: Project) -> str:
    from difflib import get_close_matches

    pool: list[str] = list(project.entities if kind == "entity" else project.rule_sets)
    close = get_close_matches(name, pool, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint}"
