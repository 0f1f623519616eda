"""Derived features: expressions over the event's fields and its other feature values.

A features file may hold a ``derived:`` list::

    derived:
      - name: amount_vs_avg_30d
        expression: amount / customer.amount_avg_30d   # x / 0 is NULL, as in rules
        event_types: [transaction]

The expression is the rule language (parsed, whitelisted and type-checked by
:mod:`decisionloop.rules.expressions`) over the scope of each listed event type: its fields,
``occurred_at``, the feature names of the entities it carries and the derived features declared
for it (in any order; a cycle is an error). It must be numeric. Online, derived values are
computed after the aggregates, in dependency order, for events of the listed types; offline, the
same checked tree is printed as SQL over the feature columns (:mod:`decisionloop.rules.sql`). A
``number`` value is a double in both (``integer`` expressions stay integers), NULL where an input
is NULL; events of other types do not see the name (NULL offline).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field
from sqlglot import exp

from decisionloop.errors import ExpressionError, Problem
from decisionloop.features.semantics import HasFields
from decisionloop.project.definitions import NAME, Strict
from decisionloop.rules.expressions import (
    Checked,
    Compiled,
    Compiler,
    Source,
    column_name,
    expression_problem,
    node_span,
    parse,
)
from decisionloop.rules.typecheck import SqlType, field_type

if TYPE_CHECKING:
    from decisionloop.project.loader import Project

NUMERIC_RESULTS: frozenset[SqlType] = frozenset({"number", "integer", "null", "any"})


class DerivedSpec(Strict):
    name: str = Field(pattern=NAME)
    expression: str
    event_types: list[str] = Field(min_length=1)
    description: str = ""


@dataclass(frozen=True)
class DerivedFeature:
    """One derived feature, checked and compiled for each of its event types (scopes differ)."""

    spec: DerivedSpec
    checked: dict[str, Checked]  # event type -> checked tree
    closures: dict[str, Compiled]  # event type -> the closure (online)
    number: bool  # a number (a double in both engines), not an integer

    @property
    def name(self) -> str:
        return self.spec.name


# Derived values of one event type, in dependency order: (name, closure, as a double).
Evaluation = list[tuple[str, Compiled, bool]]
# Reports a problem at a path inside one derived definition: (name, path, reason).
Complain = Callable[[str, tuple[str | int, ...], str], Problem]


def compile_derived(
    specs: Sequence[DerivedSpec],
    sources: Mapping[str, Source],
    complain: Complain,
    event_types: Mapping[str, HasFields],
    features: Mapping[str, Iterable[str]],
) -> tuple[list[DerivedFeature], list[Problem]]:
    """Check and compile derived definitions in dependency order, reporting every problem.

    ``sources`` locates each expression (by derived name) and ``complain`` anything else;
    ``event_types`` are the compiled types (fields include entity keys); ``features`` maps an
    event type to the feature names its events read.
    """
    problems: list[Problem] = []
    declared: dict[str, DerivedSpec] = {}
    for spec in specs:
        if spec.name in declared:
            problems.append(complain(spec.name, ("name",), "derived feature declared twice"))
        declared[spec.name] = spec
    trees: dict[str, exp.Expression] = {}
    for spec in declared.values():
        for k, event_type in enumerate(spec.event_types):
            if event_type not in event_types:
                reason = f"unknown event type {event_type!r}"
                problems.append(complain(spec.name, ("event_types", k), reason))
            elif spec.name in event_types[event_type].fields or spec.name == "occurred_at":
                reason = f"{spec.name!r} is a field of event type {event_type!r}"
                problems.append(complain(spec.name, ("name",), reason))
        try:
            trees[spec.name] = parse(spec.expression, sources[spec.name])
        except ExpressionError as exc:
            problems.extend(exc.problems)
    order, cyclic = _dependency_order(trees, declared)
    for name, node in cyclic:
        reason = f"cycle: {name} reads {column_name(node)}, which depends on {name}"
        problems.append(
            expression_problem(declared[name].expression, *node_span(node), reason, sources[name])
        )
    compiled: list[DerivedFeature] = []
    result_types: dict[str, SqlType] = {}
    for name in order:
        spec = declared[name]
        known = [t for t in spec.event_types if t in event_types]
        checked: dict[str, Checked] = {}
        closures: dict[str, Compiled] = {}
        for event_type in known:
            scope: dict[str, SqlType] = {
                field: field_type(f.type) for field, f in event_types[event_type].fields.items()
            }
            scope["occurred_at"] = "timestamp"
            scope.update(dict.fromkeys(features.get(event_type, ()), "number"))
            scope.update(
                {d.name: result_types[d.name] for d in compiled if event_type in d.checked}
            )
            compiler = Compiler(scope)
            try:
                checked[event_type] = compiler.check(spec.expression, sources[name], False)
            except ExpressionError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
                continue
            closures[event_type] = compiler.closure(checked[event_type])
        kinds = {c.type for c in checked.values()}
        if kinds - NUMERIC_RESULTS:
            kind = sorted(kinds - NUMERIC_RESULTS)[0]
            reason = f"a derived feature must be a number; this expression is a {kind}"
            problems.append(
                expression_problem(spec.expression, 0, len(spec.expression), reason, sources[name])
            )
        elif known and len(checked) == len(known):
            number = kinds != {"integer"}
            result_types[name] = "number" if number else "integer"
            compiled.append(DerivedFeature(spec, checked, closures, number))
    return compiled, problems


def _dependency_order(
    trees: Mapping[str, exp.Expression], declared: Mapping[str, DerivedSpec]
) -> tuple[list[str], list[tuple[str, exp.Column]]]:
    """Names such that each comes after the derived features it reads, and the references that
    close a cycle (the names on a cycle are left out of the order)."""
    reads = {
        name: [c for c in tree.find_all(exp.Column) if column_name(c) in declared]
        for name, tree in trees.items()
    }
    order: list[str] = []
    state: dict[str, str] = {}  # "open" while visiting, "done" after
    sound: dict[str, bool] = {}
    cyclic: list[tuple[str, exp.Column]] = []

    def visit(name: str) -> bool:
        if state.get(name) == "done":
            return sound.get(name, False)
        state[name] = "open"
        ok = True
        for node in reads.get(name, []):
            target = column_name(node)
            if state.get(target) == "open":
                cyclic.append((name, node))
                ok = False
            elif not visit(target):
                ok = False
        state[name], sound[name] = "done", ok
        if ok:
            order.append(name)
        return ok

    for name in trees:
        visit(name)
    return order, cyclic


def evaluations(derived: Iterable[DerivedFeature]) -> dict[str, Evaluation]:
    """Per event type, the closures computing its derived values in dependency order."""
    by_type: dict[str, Evaluation] = {}
    for feature in derived:  # compile_derived lists them in dependency order
        for event_type, closure in feature.closures.items():
            by_type.setdefault(event_type, []).append((feature.name, closure, feature.number))
    return by_type


def evaluate(plan: Evaluation, row: dict[str, Any], values: dict[str, Any]) -> None:
    """Add the derived values to ``values`` (and to ``row``, where later ones read them)."""
    for name, closure, number in plan:
        value = closure(row)
        if number and value is not None:
            value = float(value)
        row[name] = values[name] = value


def project_derived(
    project: Project,
    event_types: Mapping[str, HasFields],
    features: Mapping[str, Iterable[str]],
) -> tuple[list[DerivedFeature], list[Problem]]:
    """:func:`compile_derived` for a loaded project, with problems located in its files."""
    sources = {
        d.name: project.expression_source(f"derived:{d.name}", ("expression",))
        for d in project.derived
    }

    def complain(name: str, path: tuple[str | int, ...], reason: str) -> Problem:
        doc, full = project.locate(f"derived:{name}", *path)
        return doc.problem(full, reason)

    return compile_derived(project.derived, sources, complain, event_types, features)


def names_by_type(
    features: Iterable[tuple[str, Iterable[str]]], event_types: Mapping[str, HasFields]
) -> dict[str, list[str]]:
    """The feature names each event type reads: those of the entities whose key it carries.
    ``features``: (key field, names) per definition."""
    listed = [(key, list(names)) for key, names in features]
    return {
        name: [n for key, names in listed if key in event_type.fields for n in names]
        for name, event_type in event_types.items()
    }
