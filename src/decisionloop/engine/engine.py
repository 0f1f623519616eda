"""The decision engine: event -> features -> rules -> combined outcome, with reasons and a trace.

:func:`build_engine` compiles a loaded project once; :meth:`DecisionEngine.decide` is the hot path
and does no parsing, no I/O and no allocation beyond the decision it returns. Models plug in as
one more stage between rules and the combination (:mod:`decisionloop.ml.serving`): active models'
thresholds take part in the outcome, shadow models are only recorded, and a model that cannot
score leaves the decision rules-only, with a degraded ``model`` reason.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from decisionloop.domain.decisions import Decision, Reason, new_decision_id
from decisionloop.domain.events import Event, EventCatalog, EventType
from decisionloop.errors import DefinitionError, ExpressionError, Problem
from decisionloop.features.derived import names_by_type, project_derived
from decisionloop.features.links import link_problems
from decisionloop.features.online import OnlineFeatures, compile_features
from decisionloop.ml.registry import ModelRegistry
from decisionloop.ml.serving import StrategyModels, load_strategy_models
from decisionloop.ops.index import LookupIndex
from decisionloop.ops.lookups import AS_OF, LookupScope
from decisionloop.project.definitions import RuleSpec, StrategySpec
from decisionloop.project.loader import Project, load_project
from decisionloop.rules.expressions import Checked, Compiled, Compiler
from decisionloop.rules.online import OnlineRules, compile_online
from decisionloop.rules.typecheck import SqlType, field_type


@dataclass(frozen=True, slots=True)
class CompiledRule:
    spec: RuleSpec
    predicate: Compiled  # the reference closure (explanations, tests); decide uses `evaluate`
    reads: list[str]
    shadow: bool
    checked: Checked | None = None


@dataclass(frozen=True)
class CompiledStrategy:
    """A strategy's active and shadow rules, all compiled into one generated function."""

    spec: StrategySpec
    version: str
    rules: list[CompiledRule]
    severity: dict[str, int]
    thresholds: list[tuple[float, str]]  # highest score first
    online: OnlineRules | None = None  # built from `rules` when not given
    models: StrategyModels | None = None  # active and shadow models, scored after the rules

    def __post_init__(self) -> None:
        if self.online is None:
            checked = [r.checked for r in self.rules]
            if all(c is not None for c in checked):
                online = compile_online([c for c in checked if c is not None])
                object.__setattr__(self, "online", online)

    def evaluate(self, row: dict[str, Any]) -> list[CompiledRule]:
        """The rules whose predicate is TRUE for the row, in declaration order."""
        if self.online is not None:
            rules = self.rules
            try:
                return [rules[i] for i in self.online.evaluate(row)]
            except OverflowError:  # an integer beyond any float: the closures compare it exactly
                pass
        return [rule for rule in self.rules if rule.predicate(row) is True]

    def combine(self, fired: list[CompiledRule]) -> tuple[str, float, str | None]:
        """Most severe outcome wins; scores add; thresholds map the total to an outcome."""
        outcomes = self.spec.outcomes
        worst = 0
        score = 0.0
        for rule in fired:
            if rule.shadow:
                continue
            score += rule.spec.score
            if rule.spec.outcome is not None:
                worst = max(worst, self.severity[rule.spec.outcome])
        by_threshold = None
        for minimum, outcome in self.thresholds:
            if score >= minimum:
                by_threshold = outcome
                if self.severity[outcome] > worst:
                    worst = self.severity[outcome]
                break
        return outcomes[worst], score, by_threshold


class DecisionEngine:
    def __init__(
        self,
        catalog: EventCatalog,
        features: OnlineFeatures,
        strategies: dict[str, CompiledStrategy],
        fingerprint: str,
        lookups: LookupIndex | None = None,
    ) -> None:
        self.catalog = catalog
        self.features = features
        self.strategies = strategies
        self.fingerprint = fingerprint
        # Labels and lists the compiled rules read (has_label, in_list); kept current by the API.
        self.lookups = lookups if lookups is not None else LookupIndex()
        # Decisions taken without a model that should have scored them, by model (name@vN).
        self.model_degraded: Counter[str] = Counter()

    def observe(self, event: Event) -> None:
        """Feed online state without deciding (ingest-only events, state rebuild on start)."""
        self.features.observe(event)

    def decide(self, event: Event, validate_us: float = 0.0) -> Decision:
        started = time.perf_counter()
        values = self.features.observe(event)
        after_features = time.perf_counter()
        strategy = self.strategies[event.type]  # the service decides only types with one
        decided_at = datetime.now(UTC)  # lookups see the labels in force at this moment
        row: dict[str, Any] = {**event.values, "occurred_at": event.occurred_at, **values}
        row[AS_OF] = decided_at
        fired = strategy.evaluate(row)
        after_rules = time.perf_counter()
        model_reasons: list[Reason] = []
        model_severity = -1
        if strategy.models is not None:
            model_severity, degraded = strategy.models.score(row, model_reasons)
            for label in degraded:
                self.model_degraded[label] += 1
        after_models = time.perf_counter()
        reasons = [
            Reason(
                kind="rule",
                id=r.spec.id,
                description=r.spec.description,
                outcome=r.spec.outcome,
                score=r.spec.score,
                values={name: row.get(name) for name in r.reads},
                shadow=r.shadow,
            )
            for r in fired
        ]
        reasons.extend(model_reasons)
        outcome, score, by_threshold = strategy.combine(fired)
        if model_severity > strategy.severity[outcome]:  # the most severe outcome wins
            outcome = strategy.spec.outcomes[model_severity]
        if by_threshold is not None:
            reasons.append(
                Reason(
                    "threshold",
                    f"score>={by_threshold}",
                    "score threshold",
                    by_threshold,
                    score,
                    {"score": score},
                )
            )
        finished = time.perf_counter()
        return Decision(
            decision_id=new_decision_id(),
            event_id=event.event_id,
            event_type=event.type,
            occurred_at=event.occurred_at,
            decided_at=decided_at,
            outcome=outcome,
            score=score,
            strategy_version=strategy.version,
            reasons=reasons,
            trace_us={
                "validate": validate_us,
                "features": (after_features - started) * 1e6,
                "rules": (after_rules - after_features) * 1e6,
                **({"model": (after_models - after_rules) * 1e6} if strategy.models else {}),
                "combine": (finished - after_models) * 1e6,
            },
        )

    @property
    def horizon_seconds(self) -> int:
        """How far back the source layer must be replayed to rebuild online state."""
        return max((f.horizon for f in self.features.features), default=0)


def compile_project(
    root: Path, lookups: LookupIndex | None = None
) -> tuple[Project, DecisionEngine]:
    """Load and compile a project folder, reporting every problem of both steps at once."""
    project = load_project(root, strict=False)
    problems = list(project.problems)
    try:
        engine = build_engine(project, lookups)
    except DefinitionError as exc:
        problems.extend(p for p in exc.problems if p not in problems)
    if problems:
        problems.sort(key=lambda p: (p.file or "", p.line or 0, p.column or 0))
        raise DefinitionError(f"{len(problems)} problem(s) in {root}", problems)
    return project, engine


def build_engine(project: Project, lookups: LookupIndex | None = None) -> DecisionEngine:
    """Compile every definition; raise one :class:`DefinitionError` listing every problem.

    ``lookups`` is the label and list index the rules read; a reload passes the running one.

    Definitions whose references are broken (reported by the loader) are skipped, so that a
    partial project still compiles far enough to report its expression errors.
    """
    lookup_index = lookups if lookups is not None else LookupIndex()  # shared by every strategy
    problems: list[Problem] = []
    entity_keys = {name: spec.key for name, spec in project.entities.items()}
    types = {
        name: EventType.build(name, spec, project.entities)
        for name, spec in project.event_types.items()
    }
    catalog = EventCatalog(types)
    filters: dict[str, Callable[[Event], bool]] = {}
    usable = [
        f
        for f in project.features
        if f.entity in entity_keys and all(t in types for t in f.event_types)
    ]
    for feature in usable:
        if feature.filter is None:
            continue
        names = set().union(*(_field_scope(types[t]) for t in feature.event_types))
        source = project.expression_source(f"feature:{feature.name}", ("filter",))
        try:
            predicate, reads = Compiler(names).compile(feature.filter, source)
        except ExpressionError as exc:  # a template's filter: reported once, not per expansion
            known = {(p.file, p.line, p.column, p.reason) for p in problems}
            problems.extend(
                p for p in exc.problems if (p.file, p.line, p.column, p.reason) not in known
            )
            continue
        filters[feature.name] = _event_predicate(predicate, "occurred_at" in reads)
    features = compile_features(
        [f for f in usable if not link_problems(f, entity_keys)],  # the loader locates those
        entity_keys,
        filters,
        event_types=types,  # integer fields sum as integers, exactly as offline
        allowed_lateness=project.spec.allowed_lateness,
        lookups=lookup_index,  # labelled_neighbours reads the risk labels as of event time
    )
    read = names_by_type(((f.key_field, f.names) for f in features.features), types)
    derived, found = project_derived(project, types, read)
    problems.extend(found)
    features.add_derived(derived)
    strategies: dict[str, CompiledStrategy] = {}
    registry = ModelRegistry(project.root)
    for event_type_name, spec in project.strategies.items():
        event_type = types.get(event_type_name)
        if event_type is None:
            continue
        scope = _typed_scope(event_type) | {
            name: "number"
            for f in features.features
            if f.key_field in event_type.fields
            for name in f.names
        }
        scope.update({d.name: "number" for d in derived if event_type_name in d.closures})
        compiler = Compiler(scope, lookups=LookupScope(event_type.entity_keys, lookup_index))
        rules: list[CompiledRule] = []
        for rule_set_name in (n for n in spec.rule_sets if n in project.rule_sets):
            for index, rule in enumerate(project.rule_sets[rule_set_name].rules):
                key = f"rule_set:{rule_set_name}"
                source = project.expression_source(key, ("rules", index, "when"))
                try:
                    # Drafts and retired rules are compiled too, so that validate checks them.
                    checked = compiler.check(rule.when, source)
                except ExpressionError as exc:
                    problems.extend(exc.problems)
                    continue
                for at, attach in enumerate(rule.labels):
                    if attach.entity not in event_type.entity_keys:
                        doc, path = project.locate(key, "rules", index, "labels", at, "entity")
                        carried = ", ".join(sorted(event_type.entity_keys)) or "none"
                        reason = (
                            f"{event_type_name} events carry no {attach.entity!r} entity to "
                            f"label (they carry: {carried})"
                        )
                        problems.append(doc.problem(path, reason))
                if rule.status in ("shadow", "active"):
                    shadow = rule.status == "shadow"
                    predicate = compiler.closure(checked)
                    rules.append(CompiledRule(rule, predicate, checked.reads, shadow, checked))
        severity = {outcome: i for i, outcome in enumerate(spec.outcomes)}
        strategies[event_type_name] = CompiledStrategy(
            spec=spec,
            version=f"{event_type_name}@v{spec.version}+{project.fingerprint}",
            rules=rules,
            severity=severity,
            thresholds=sorted(((t.score, t.outcome) for t in spec.thresholds), reverse=True),
            models=load_strategy_models(registry, spec.models, set(scope), severity),
        )
    if problems:
        raise DefinitionError(f"{len(problems)} problem(s) in {project.root}", problems)
    return DecisionEngine(catalog, features, strategies, project.fingerprint, lookup_index)


def _field_scope(event_type: EventType) -> set[str]:
    return set(event_type.fields) | {"occurred_at"}


def _typed_scope(event_type: EventType) -> dict[str, SqlType]:
    """Each field with its expression type (enums are strings); ``occurred_at`` a timestamp."""
    scope = {name: field_type(spec.type) for name, spec in event_type.fields.items()}
    scope["occurred_at"] = "timestamp"
    return scope


def _event_predicate(predicate: Compiled, reads_time: bool) -> Callable[[Event], bool]:
    """The filter over an event's values; the event time joins them only for a filter that
    reads it (a copy of the values per event and filter otherwise, on the hot path)."""
    if not reads_time:
        return lambda event: predicate(event.values) is True

    def applies(event: Event) -> bool:
        return predicate({**event.values, "occurred_at": event.occurred_at}) is True

    return applies
