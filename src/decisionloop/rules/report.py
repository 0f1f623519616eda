"""The per-rule backtest report: every rule of every strategy over a period of stored events.

:func:`backtest` replays the decisions of a period offline. For each decided event type it takes
the stored events of ``[start, end)``, their point-in-time features
(:func:`decisionloop.features.offline.offline_features`: the values as known just before each
event), and evaluates the strategy's active, shadow and draft rules, plus the rules of an optional
candidate rule-set file, with the bitset backtest path (:mod:`decisionloop.rules.backtest`). No
other evaluator is involved: each rule's hits are the events where its SQL predicate is TRUE.

Measures, one row per (event type, rule); the denominators are the events of the rule's own
strategy type in the period (events of types it does not decide never count):

* ``events``: events of the strategy's type in the period; ``hits``: those where the rule fired;
  ``hit_rate`` = hits / events; ``alerts_per_day`` = hits / length of the period in days.
* ``labelled_events``: events of the type known to be fraud by the end of the period (see below);
  ``true_positives``: hits among them; ``precision`` = true_positives / hits (null without hits);
  ``recall`` = true_positives / labelled_events (null without labelled events).
* ``overlap_share``: the share of the rule's hits also hit by at least one other rule of the same
  strategy (any status); ``unique_hits``: hits no other rule has; ``top_overlap_rule`` and
  ``top_overlap_share``: the other rule sharing most of its hits, and that share.
* The change to the outcome mix, for rules that do not decide today (draft, shadow, candidate):
  the current outcome of every event is recomputed from the active rules' hits as the engine
  combines them (most severe outcome wins, scores add, thresholds map the total), then again with
  the rule made active. ``escalated``: events whose outcome would become more severe (what newly
  blocks); ``relaxed``: less severe (a negative score can pull an event under a threshold: what
  stops blocking); ``outcome_changes``: the transitions with their counts; the event ids are in
  ``escalated_event_ids`` and ``relaxed_event_ids``. Null for active rules.

Labels: an event is a positive when a ``label`` event with one of ``positive_labels`` (default
``fraud``) names it — ``entity_type = 'event'`` and ``entity_id`` = its id, or
``refers_to_event_id`` = its id — and that label occurred before the end of the period. A label
that arrives later was not known when the period closed and does not count, as an analyst running
the backtest that day could not have seen it. The label's ``occurred_at`` is the time the bank
learnt it (a chargeback's or investigation's date); ``ingested_at`` is not used, because a bulk
import stamps the whole history with the time of the import.

Lookups: rules may call ``has_label(entity, 'name')`` and ``in_list('list', expr)``, compiled as
:func:`build_engine` compiles them. Each event answers as of its decision time (``decided_at``:
the time of its stored decision, or its ``occurred_at`` when it was imported without one), over
the full label and list-item history of the operational store given to :func:`backtest`; a label
added, removed or expired after an event's decision does not change that event's answer. Without
a store, no label or list item exists and every lookup is FALSE.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import polars as pl
from pydantic import TypeAdapter, ValidationError

from decisionloop.engine.engine import DecisionEngine, build_engine
from decisionloop.errors import (
    DefinitionError,
    ExpressionError,
    InputError,
    NotFoundError,
    Problem,
    StorageError,
)
from decisionloop.features.offline import offline_features
from decisionloop.ops.history import DECIDED_AT_SQL, register_history
from decisionloop.ops.lookups import AS_OF, LABEL_HISTORY, LIST_HISTORY, LookupScope
from decisionloop.ops.store import OpsStore
from decisionloop.project.definitions import RuleSetSpec, RuleSpec, StrategySpec
from decisionloop.project.loader import (
    Project,
    check_references,
    load_project,
)
from decisionloop.project.located import YamlSyntaxError, load_yaml
from decisionloop.rules import backtest as bitsets
from decisionloop.rules.expressions import Checked, Compiler
from decisionloop.rules.sql import DUCKDB_TYPES
from decisionloop.rules.typecheck import SqlType, field_type
from decisionloop.storage.duckdb_source import DuckDBSourceLog

__all__ = [
    "REPORT_SCHEMA",
    "RuleUnderTest",
    "backtest",
    "load_candidate_rules",
    "open_source",
    "strategy_scores",
]

Status = Literal["active", "shadow", "draft", "candidate"]
LABEL_TYPE = "label"
POSITIVE_LABELS = ("fraud",)
ROWS_TABLE = "_backtest_rows"
_FEATURES_TABLE = "_backtest_features"
_TRANSITION = pl.Struct({"from": pl.String, "to": pl.String, "events": pl.Int64})
REPORT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "event_type": pl.String,
    "rule_id": pl.String,
    "rule_set": pl.String,
    "status": pl.String,
    "outcome": pl.String,
    "score": pl.Float64,
    "events": pl.Int64,
    "hits": pl.Int64,
    "hit_rate": pl.Float64,
    "alerts_per_day": pl.Float64,
    "labelled_events": pl.Int64,
    "true_positives": pl.Int64,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "overlap_share": pl.Float64,
    "unique_hits": pl.Int64,
    "top_overlap_rule": pl.String,
    "top_overlap_share": pl.Float64,
    "escalated": pl.Int64,
    "relaxed": pl.Int64,
    "outcome_changes": pl.List(_TRANSITION),
    "escalated_event_ids": pl.List(pl.String),
    "relaxed_event_ids": pl.List(pl.String),
}


@dataclass(frozen=True)
class RuleUnderTest:
    """One rule as evaluated for one strategy."""

    event_type: str
    rule_set: str
    status: Status
    spec: RuleSpec
    checked: Checked


# -- inputs ---------------------------------------------------------------------------------------
def open_source(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a DuckDB source layer, after moving whatever its journal still
    holds into the file (as the service does on start), so that the backtest sees every event."""
    if not path.is_file():
        raise NotFoundError(
            f"no source layer at {path}",
            [Problem(str(path), "import events first (decisionloop ingest, or decisionloop demo)")],
        )
    DuckDBSourceLog(path).close()  # raises StorageError while a running service holds the file
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise StorageError(f"cannot open source layer {path}: {exc}") from exc


def load_candidate_rules(
    project: Project, engine: DecisionEngine, path: Path
) -> tuple[Project, list[RuleUnderTest]]:
    """Load a rule-set file (the format of the project's ``rules/*.yaml``) as candidate rules.

    It is checked with the project loader's own checks, as if it were one more file of the
    project listed by every strategy, so that errors carry file:line:column: YAML syntax, shape,
    outcomes the strategies do not declare, rule ids already used, expressions. A candidate is
    evaluated for every strategy whose names it reads (an error if there is none). Returns the
    project with the set added (to its rule sets, not to any strategy) and the candidates.
    """
    if not path.is_file():
        raise NotFoundError(f"rules file {path} not found", [Problem(str(path), "no such file")])
    try:
        document = load_yaml(path)
    except YamlSyntaxError as exc:
        raise DefinitionError(f"problem in {path}", [exc.problem]) from exc
    try:
        rule_set = TypeAdapter(RuleSetSpec).validate_python(document.data or {})
    except ValidationError as exc:
        shape = [
            document.problem(tuple(p for p in e["loc"] if isinstance(p, str | int)), e["msg"])
            for e in exc.errors()
        ]
        raise DefinitionError(f"{len(shape)} problem(s) in {path}", shape) from exc
    if rule_set.name in project.rule_sets:
        problem = document.problem(
            ("name",), f"the project already has a rule set {rule_set.name!r}; name it apart"
        )
        raise DefinitionError(f"problem in {path}", [problem])
    key = f"rule_set:{rule_set.name}"
    candidate = dataclasses.replace(
        project,
        rule_sets={**project.rule_sets, rule_set.name: rule_set},
        documents={**project.documents, str(document.file): document},
        origins={**project.origins, key: (str(document.file), ())},
    )
    listed = {
        name: strategy.model_copy(update={"rule_sets": [*strategy.rule_sets, rule_set.name]})
        for name, strategy in project.strategies.items()
    }
    problems = [
        p
        for p in check_references(dataclasses.replace(candidate, strategies=listed))
        if p.file == str(document.file)
    ]
    rules: list[RuleUnderTest] = []
    for index, rule in enumerate(rule_set.rules):
        if rule.status == "retired":
            continue
        source = candidate.expression_source(key, ("rules", index, "when"))
        refusals: list[Problem] = []
        for event_type in project.strategies:
            try:
                checked = _compiler(engine, event_type).check(rule.when, source)
            except ExpressionError as exc:
                refusals = refusals or exc.problems
                continue
            rules.append(RuleUnderTest(event_type, rule_set.name, "candidate", rule, checked))
        if not any(r.spec is rule for r in rules):
            problems.extend(refusals)  # it fits no strategy: why it does not fit the first
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        raise DefinitionError(f"{len(problems)} problem(s) in {path}", problems)
    return candidate, rules


def _rules_under_test(project: Project, engine: DecisionEngine) -> dict[str, list[RuleUnderTest]]:
    """Per strategy, its active, shadow and draft rules, checked against the names the engine
    gives that strategy's rules."""
    by_type: dict[str, list[RuleUnderTest]] = {}
    for event_type, strategy in project.strategies.items():
        compiler = _compiler(engine, event_type)
        rules: list[RuleUnderTest] = []
        for set_name in strategy.rule_sets:
            for index, rule in enumerate(project.rule_sets[set_name].rules):
                if rule.status == "retired":
                    continue
                source = project.expression_source(f"rule_set:{set_name}", ("rules", index, "when"))
                checked = compiler.check(rule.when, source)  # compiled by build_engine already
                rules.append(RuleUnderTest(event_type, set_name, rule.status, rule, checked))
        by_type[event_type] = rules
    return by_type


def _compiler(engine: DecisionEngine, event_type: str) -> Compiler:
    """The compiler of a strategy's rules, as :func:`build_engine` builds it: the names of
    :func:`_rule_scope`, and ``has_label``/``in_list`` over the entities the event carries."""
    entities = engine.catalog.types[event_type].entity_keys
    return Compiler(_rule_scope(engine, event_type), lookups=LookupScope(entities, engine.lookups))


def _rule_scope(engine: DecisionEngine, event_type: str) -> dict[str, SqlType]:
    """The names a strategy's rules read, typed as :func:`build_engine` types them: the event's
    fields, ``occurred_at``, the features of the entities the event carries, and the derived
    features of its type."""
    fields = engine.catalog.types[event_type].fields
    scope = {name: field_type(spec.type) for name, spec in fields.items()}
    scope["occurred_at"] = "timestamp"
    for feature in engine.features.features:
        if feature.key_field in fields:
            scope.update(dict.fromkeys(feature.names, "number"))
    scope.update({d.name: "number" for d in engine.features.derived if event_type in d.closures})
    return scope


def as_instant(moment: datetime | date) -> datetime:
    if not isinstance(moment, datetime):
        return datetime.combine(moment, time(), tzinfo=UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- evaluation -----------------------------------------------------------------------------------
def evaluation_rows(
    conn: duckdb.DuckDBPyConnection,
    project: Project,
    engine: DecisionEngine,
    event_type: str,
    start: datetime,
    end: datetime,
    features: pl.DataFrame | None = None,
) -> list[str]:
    """Register one row per event of the type in the period: its typed fields, ``occurred_at``,
    ``decided_at`` (the time lookups answer at) and its point-in-time features, named as the
    rules read them (``features``: already computed for the same type and period). Returns the
    event ids."""
    if features is None:
        features = offline_features(conn, project, types=[event_type], start=start, end=end)
    conn.register(_FEATURES_TABLE, features.to_arrow())
    # A field named like the decision time is shadowed by it, as the engine shadows it online.
    fields = {
        name: spec
        for name, spec in engine.catalog.types[event_type].fields.items()
        if name != AS_OF
    }
    shape = ", ".join(
        f'"{name}": "{"VARCHAR" if spec.type == "timestamp" else _sql_type(spec.type)}"'
        for name, spec in fields.items()
    )
    typed = [
        (
            f'CAST(e._p."{name}" AS TIMESTAMPTZ) AS "{name}"'
            if spec.type == "timestamp"
            else f'e._p."{name}" AS "{name}"'
        )
        for name, spec in fields.items()
    ]
    feature_columns = [f'f."{name}"' for name in features.columns if name != "event_id"]
    decided_at = f'{_decided_at_sql(conn)} AS "{AS_OF}"'
    columns = ", ".join(["e.event_id", "e.occurred_at", decided_at, *typed, *feature_columns])
    payload = f"json_transform(payload, '{{{shape}}}')" if fields else "NULL"
    source = (
        f"SELECT seq, event_id, occurred_at, {payload} AS _p "
        "FROM events WHERE event_type = $type AND occurred_at >= $start AND occurred_at < $end"
    )
    query = (
        f"SELECT {columns} FROM ({source}) e "
        f"JOIN {_FEATURES_TABLE} f ON f.event_id = e.event_id ORDER BY e.seq"
    )
    parameters = {"type": event_type, "start": start, "end": end}
    rows = conn.sql(query, params=parameters).to_arrow_table()
    conn.unregister(_FEATURES_TABLE)
    conn.register(ROWS_TABLE, rows)
    ids: list[str] = rows.column("event_id").to_pylist()
    return ids


def _decided_at_sql(conn: duckdb.DuckDBPyConnection) -> str:
    """Each event's decision time: its stored decision's, or its ``occurred_at`` without one (as
    for a connection holding the ``events`` table alone)."""
    try:
        conn.execute("SELECT 1 FROM decisions LIMIT 0")
    except duckdb.CatalogException:
        return "e.occurred_at"
    return DECIDED_AT_SQL


def _sql_type(declared: str) -> str:
    return DUCKDB_TYPES[field_type(declared)]


def _positives(
    conn: duckdb.DuckDBPyConnection, end: datetime, labels: Sequence[str], label_type: str
) -> set[str]:
    """Ids of events named by a positive label that occurred before ``end``."""
    query = """
        WITH known AS (
            SELECT payload FROM events
            WHERE event_type = $label_type AND occurred_at < $end
              AND json_extract_string(payload, '$.label') IN (SELECT unnest($labels))
        )
        SELECT json_extract_string(payload, '$.entity_id') FROM known
        WHERE json_extract_string(payload, '$.entity_type') = 'event'
        UNION
        SELECT json_extract_string(payload, '$.refers_to_event_id') FROM known
    """
    parameters = {"label_type": label_type, "end": end, "labels": list(labels)}
    return {row[0] for row in conn.execute(query, parameters).fetchall() if row[0] is not None}


@dataclass
class _Outcomes:
    """The strategy's combination, vectorised over events: most severe outcome of the fired
    active rules, their scores added in declaration order (as the engine adds them), and the
    threshold with the highest minimum the total reaches."""

    spec: StrategySpec
    rule_severity: np.ndarray  # int64 per event, before thresholds
    score: np.ndarray  # float64 per event

    @property
    def severity(self) -> np.ndarray:
        return self.with_thresholds(self.rule_severity, self.score)

    def with_thresholds(self, rule_severity: np.ndarray, score: np.ndarray) -> np.ndarray:
        final = rule_severity.copy()
        decided = np.zeros(len(score), dtype=bool)
        for threshold in sorted(self.spec.thresholds, key=lambda t: t.score, reverse=True):
            reached = ~decided & (score >= threshold.score)
            np.maximum(final, np.where(reached, self.level(threshold.outcome), 0), out=final)
            decided |= reached
        return final

    def level(self, outcome: str | None) -> int:
        return self.spec.outcomes.index(outcome) if outcome is not None else 0


def _current_outcomes(
    spec: StrategySpec, rules: list[RuleUnderTest], bits: bitsets.RuleBits
) -> _Outcomes:
    outcomes = _Outcomes(spec, np.zeros(bits.events, dtype=np.int64), np.zeros(bits.events))
    for i, rule in enumerate(rules):
        if rule.status != "active":
            continue
        fired = bits.column(i)
        outcomes.score += np.where(fired, rule.spec.score, 0.0)
        np.maximum(
            outcomes.rule_severity,
            np.where(fired, outcomes.level(rule.spec.outcome), 0),
            out=outcomes.rule_severity,
        )
    return outcomes


def _change(
    outcomes: _Outcomes, current: np.ndarray, rule: RuleSpec, fired: np.ndarray, ids: np.ndarray
) -> dict[str, Any]:
    """What making the rule active would change: events escalated, relaxed, and transitions."""
    severity = np.maximum(outcomes.rule_severity, np.where(fired, outcomes.level(rule.outcome), 0))
    score = outcomes.score + np.where(fired, rule.score, 0.0)
    changed = outcomes.with_thresholds(severity, score)
    escalated, relaxed = changed > current, changed < current
    names = outcomes.spec.outcomes
    pairs, counts = np.unique(
        np.stack([current[changed != current], changed[changed != current]]),
        axis=1,
        return_counts=True,
    )
    transitions = [
        {"from": names[int(a)], "to": names[int(b)], "events": int(n)}
        for (a, b), n in zip(pairs.T.tolist(), counts.tolist(), strict=True)
    ]
    return {
        "escalated": int(escalated.sum()),
        "relaxed": int(relaxed.sum()),
        "outcome_changes": transitions,
        "escalated_event_ids": ids[escalated].tolist(),
        "relaxed_event_ids": ids[relaxed].tolist(),
    }


def _strategy_rows(
    conn: duckdb.DuckDBPyConnection,
    spec: StrategySpec,
    rules: list[RuleUnderTest],
    ids: list[str],
    positives: set[str],
    days: float,
) -> list[dict[str, Any]]:
    events = len(ids)
    bits = bitsets.evaluate(conn, ROWS_TABLE, [(r.spec.id, r.checked) for r in rules])
    hits = bits.hits()
    labelled = np.fromiter((i in positives for i in ids), dtype=bool, count=events)
    # How many rules fired on each event: > 1 on a rule's hit means another rule has it too.
    # Columns are unpacked one at a time: all at once would take rules x events bytes.
    fired_rules = np.zeros(events, dtype=np.int64)
    for i in range(len(rules)):
        fired_rules += bits.column(i)
    outcomes = _current_outcomes(spec, rules, bits)
    current = outcomes.severity
    id_array = np.array(ids, dtype=object)
    rows: list[dict[str, Any]] = []
    for i, rule in enumerate(rules):
        fired = bits.column(i)
        n_hits = int(hits[i])
        true_positives = int((fired & labelled).sum())
        # Hits shared with each rule, counted over the bytes where this rule has hits only.
        where = np.flatnonzero(bits.true[i])
        together = bits.true[:, where] & bits.true[i, where]
        shared = np.bitwise_count(together).sum(axis=1, dtype=np.int64)
        shared[i] = -1  # never its own top overlap
        top = int(np.argmax(shared)) if len(rules) > 1 else -1
        row: dict[str, Any] = {
            "event_type": rule.event_type,
            "rule_id": rule.spec.id,
            "rule_set": rule.rule_set,
            "status": rule.status,
            "outcome": rule.spec.outcome,
            "score": rule.spec.score,
            "events": events,
            "hits": n_hits,
            "hit_rate": n_hits / events,
            "alerts_per_day": n_hits / days,
            "labelled_events": int(labelled.sum()),
            "true_positives": true_positives,
            "precision": true_positives / n_hits if n_hits else None,
            "recall": true_positives / int(labelled.sum()) if labelled.any() else None,
            "overlap_share": float((fired_rules[fired] > 1).mean()) if n_hits else None,
            "unique_hits": int((fired_rules[fired] == 1).sum()),
            "top_overlap_rule": rules[top].spec.id if n_hits and top >= 0 and shared[top] else None,
            "top_overlap_share": int(shared[top]) / n_hits if n_hits and top >= 0 else None,
        }
        if rule.status != "active":
            row.update(_change(outcomes, current, rule.spec, fired, id_array))
        rows.append(row)
    return rows


def backtest(
    conn_or_path: duckdb.DuckDBPyConnection | Path | str,
    project: Project | Path | str,
    start: datetime | date,
    end: datetime | date,
    rules: Path | str | None = None,
    *,
    positive_labels: Sequence[str] = POSITIVE_LABELS,
    label_type: str = LABEL_TYPE,
    store: OpsStore | None = None,
) -> pl.DataFrame:
    """Evaluate every rule of the project's strategies over the stored events of ``[start,
    end)`` (dates are midnight UTC; naive datetimes are UTC) and report one row per rule, with
    the columns of :data:`REPORT_SCHEMA` (the module docstring defines each).

    ``conn_or_path``: a DuckDB connection holding the source layer's ``events`` table, or the
    path of its file (opened read-only). ``project``: a loaded project or its folder. ``rules``:
    an optional rule-set file of candidate rules. A label counts only if it occurred before
    ``end``: labels that arrive after the period were not known at its end.

    ``store``: the operational store whose label and list-item history ``has_label`` and
    ``in_list`` read, each event as of its decision time (none: every lookup is FALSE). It is
    read, not closed.
    """
    start, end = as_instant(start), as_instant(end)
    if start >= end:
        raise InputError(
            "empty period",
            [Problem("period", f"the start {start.isoformat()} is not before the end {end}")],
        )
    loaded = project if isinstance(project, Project) else load_project(Path(project))
    engine = build_engine(loaded)  # every project problem at once, before any work
    by_type = _rules_under_test(loaded, engine)
    if rules is not None:
        loaded, candidates = load_candidate_rules(loaded, engine, Path(rules))
        for candidate in candidates:
            by_type[candidate.event_type].append(candidate)
    # The whole history: each event picks what was in force at its own decision time.
    labels, items = (store.labels(), store.items()) if store is not None else ([], [])
    own = not isinstance(conn_or_path, duckdb.DuckDBPyConnection)
    if isinstance(conn_or_path, duckdb.DuckDBPyConnection):
        conn = conn_or_path
    else:
        conn = open_source(Path(conn_or_path))
    try:
        register_history(conn, labels, items)
        positives = _positives(conn, end, positive_labels, label_type)
        days = (end - start) / timedelta(days=1)
        rows: list[dict[str, Any]] = []
        seen = 0
        for event_type, rules_of_type in by_type.items():
            if not rules_of_type:
                continue
            ids = evaluation_rows(conn, loaded, engine, event_type, start, end)
            try:
                if ids:
                    spec = loaded.strategies[event_type]
                    rows += _strategy_rows(conn, spec, rules_of_type, ids, positives, days)
            finally:
                conn.unregister(ROWS_TABLE)
            seen += len(ids)
    finally:
        if own:
            conn.close()
        else:
            for table in (LABEL_HISTORY, LIST_HISTORY):
                conn.unregister(table)
    if not seen:
        decided = ", ".join(t for t, r in by_type.items() if r) or "none"
        raise NotFoundError(
            "nothing to backtest",
            [
                Problem(
                    "period",
                    f"no stored events of the decided types ({decided}) between "
                    f"{start.isoformat()} and {end.isoformat()}",
                )
            ],
        )
    return pl.DataFrame(rows, schema=REPORT_SCHEMA)


def strategy_scores(
    conn: duckdb.DuckDBPyConnection,
    project: Project,
    event_type: str,
    start: datetime,
    end: datetime,
    store: OpsStore | None = None,
    features: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """What the strategy's active rules decide for each stored ``event_type`` event of ``[start,
    end)``, offline: ``event_id``, ``rules_severity`` (the outcome's index, thresholds included)
    and ``rules_score`` (the fired active rules' scores added) — the ranking of "rules alone"
    that an evaluation compares a model with. ``features``: see :func:`evaluation_rows`."""
    engine = build_engine(project)
    rules = [
        r for r in _rules_under_test(project, engine).get(event_type, []) if r.status == "active"
    ]
    empty = pl.DataFrame(
        schema={"event_id": pl.String, "rules_severity": pl.Int64, "rules_score": pl.Float64}
    )
    if event_type not in project.strategies:
        return empty
    labels, items = (store.labels(), store.items()) if store is not None else ([], [])
    register_history(conn, labels, items)
    try:
        ids = evaluation_rows(conn, project, engine, event_type, start, end, features)
        try:
            if not ids:
                return empty
            spec = project.strategies[event_type]
            bits = bitsets.evaluate(conn, ROWS_TABLE, [(r.spec.id, r.checked) for r in rules])
            outcomes = _current_outcomes(spec, rules, bits)
            return pl.DataFrame(
                {
                    "event_id": ids,
                    "rules_severity": outcomes.severity,
                    "rules_score": outcomes.score,
                }
            )
        finally:
            conn.unregister(ROWS_TABLE)
    finally:
        for table in (LABEL_HISTORY, LIST_HISTORY):
            conn.unregister(table)
