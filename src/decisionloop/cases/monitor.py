"""Post-event monitoring: rule sets run in batch over a past period, opening alerts and cases.

A monitoring rule set has the format of ``rules/*.yaml`` and lives in the project's
``monitoring/`` folder (or is named with ``--rules``); the decision path never runs it. Each set
is checked as the backtest checks candidate rules (:func:`decisionloop.rules.report.
load_candidate_rules`: file:line:column errors, evaluated for every strategy whose names it
reads) and evaluated by the same vectorised path over the stored events of ``[start, end)`` with
their point-in-time features and the operational store's label and list history.

Every hit of an ``active`` rule (draft and shadow rules are evaluated, not alerted) is one alert,
keyed ``monitor:<rule set>.<rule>:<event_id>``, so that running the same window twice, or two
overlapping windows, opens no duplicate alert. Its queue is the rule's ``queue`` or the default,
its priority that of the rule's ``outcome``; it joins its entity's open case like any alert.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from decisionloop.cases.config import load_cases_config
from decisionloop.cases.service import CaseService
from decisionloop.cases.store import MonitorRunRecord, NewAlert
from decisionloop.engine.engine import DecisionEngine, build_engine
from decisionloop.errors import DefinitionError, InputError, NotFoundError, Problem
from decisionloop.ops.history import register_history
from decisionloop.ops.lookups import LABEL_HISTORY, LIST_HISTORY
from decisionloop.ops.store import OpsStore, from_us
from decisionloop.project.loader import Project, load_project
from decisionloop.rules import backtest as bitsets
from decisionloop.rules.report import (
    ROWS_TABLE,
    RuleUnderTest,
    as_instant,
    evaluation_rows,
    load_candidate_rules,
    open_source,
)

MONITORING_DIR = "monitoring"


@dataclass
class MonitorRun:
    """What one run found: hits per rule, alerts new and already known, cases opened."""

    events: int = 0
    hits: dict[str, int] = field(default_factory=dict)  # <rule set>.<rule> -> events
    alerts: int = 0
    repeats: int = 0
    cases_opened: list[int] = field(default_factory=list)
    cases_touched: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "hits": self.hits,
            "alerts": self.alerts,
            "repeats": self.repeats,
            "cases_opened": self.cases_opened,
            "cases_touched": sorted(self.cases_touched),
        }


def monitoring_files(project_dir: Path, rules: list[Path] | None) -> list[Path]:
    """The rule-set files to run: those given, else ``<project>/monitoring/*.yaml``."""
    if rules:
        return rules
    found = sorted((Path(project_dir) / MONITORING_DIR).glob("*.yaml"))
    if not found:
        raise NotFoundError(
            "no monitoring rules",
            [
                Problem(
                    f"{MONITORING_DIR}/",
                    "put rule-set files in the project's monitoring/ folder, or pass --rules FILE",
                )
            ],
        )
    return found


def recorded_run(
    cases: CaseService,
    trigger: str,
    start: datetime,
    end: datetime,
    attempt: Callable[[], MonitorRun],
) -> tuple[MonitorRun, MonitorRunRecord]:
    """Run ``attempt`` (a :func:`monitor` call over ``[start, end)``) and record it in the case
    store with its counts, or with its error before re-raising it: how the service's schedule,
    its API and the CLI all keep ``monitor_runs``. Returns the run and its stored record."""
    ran_at = datetime.now(UTC)
    try:
        done = attempt()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        cases.store.record_run(MonitorRunRecord(trigger, start, end, ran_at, error=error))
        raise
    record = MonitorRunRecord(
        trigger, start, end, ran_at, done.events, done.alerts, len(done.cases_opened)
    )
    return done, dataclasses.replace(record, id=cases.store.record_run(record))


def check_casework(project_dir: Path, project: Project, engine: DecisionEngine) -> int:
    """``validate``'s check of ``cases.yaml`` and of every ``monitoring/*.yaml`` rule set: one
    error listing each problem with file:line; else the number of monitoring rules."""
    problems: list[Problem] = []
    try:
        load_cases_config(project_dir, engine.catalog.types)
    except DefinitionError as exc:
        problems += exc.problems
    rules = 0
    for path in sorted((Path(project_dir) / MONITORING_DIR).glob("*.yaml")):
        try:
            project, candidates = load_candidate_rules(project, engine, path)
        except DefinitionError as exc:
            problems += exc.problems
        else:
            rules += len(candidates)
    if problems:
        raise DefinitionError(f"{len(problems)} problem(s) in cases and monitoring", problems)
    return rules


def monitor(
    source: duckdb.DuckDBPyConnection | Path,
    project_dir: Path,
    start: datetime,
    end: datetime,
    cases: CaseService,
    rules: list[Path] | None = None,
    store: OpsStore | None = None,
) -> MonitorRun:
    """Run the monitoring rule sets over ``[start, end)`` and open alerts for their hits."""
    start, end = as_instant(start), as_instant(end)
    if start >= end:
        raise InputError(
            "empty period",
            [Problem("period", f"the start {start.isoformat()} is not before the end {end}")],
        )
    project = load_project(Path(project_dir))
    engine = build_engine(project)
    under_test: list[RuleUnderTest] = []
    for path in monitoring_files(project_dir, rules):
        project, candidates = load_candidate_rules(project, engine, path)
        under_test += [c for c in candidates if c.spec.status == "active"]
    by_type: dict[str, list[RuleUnderTest]] = {}
    for rule in under_test:
        by_type.setdefault(rule.event_type, []).append(rule)
    labels, items = (store.labels(), store.items()) if store is not None else ([], [])
    own = not isinstance(source, duckdb.DuckDBPyConnection)
    conn = (
        open_source(Path(source)) if not isinstance(source, duckdb.DuckDBPyConnection) else source
    )
    run = MonitorRun()
    alerts: list[NewAlert] = []
    try:
        register_history(conn, labels, items)
        for event_type, rules_of_type in by_type.items():
            ids = evaluation_rows(conn, project, engine, event_type, start, end)
            try:
                if ids:
                    alerts += _alerts(conn, cases, engine.catalog.types[event_type], rules_of_type)
                run.events += len(ids)
            finally:
                conn.unregister(ROWS_TABLE)
    finally:
        if own:
            conn.close()
        else:
            for table in (LABEL_HISTORY, LIST_HISTORY):
                conn.unregister(table)
    for alert in alerts:
        name = alert.rule_ids[0]
        run.hits[name] = run.hits.get(name, 0) + 1
    opened = cases.open_alerts(alerts)
    run.alerts, run.repeats = len(opened.alerts), opened.repeats
    run.cases_opened = opened.cases_opened
    run.cases_touched = {a.case_id for a in opened.alerts}
    return run


def _alerts(
    conn: duckdb.DuckDBPyConnection,
    cases: CaseService,
    event_type: Any,
    rules: list[RuleUnderTest],
) -> list[NewAlert]:
    """One alert per (rule, event) where the rule is TRUE, in the rules' and events' order."""
    bits = bitsets.evaluate(conn, ROWS_TABLE, [(r.spec.id, r.checked) for r in rules])
    keys = list(event_type.entity_keys.values())
    # Times as epoch microseconds: DuckDB hands TIMESTAMPTZ to Python only through pytz.
    wanted = ", ".join(["event_id", "epoch_us(occurred_at)", *(f'"{k}"' for k in keys)])
    rows = conn.sql(f"SELECT {wanted} FROM {ROWS_TABLE}").fetchall()  # registered order
    config = cases.config
    found: list[NewAlert] = []
    for index, rule in enumerate(rules):
        name = f"{rule.rule_set}.{rule.spec.id}"
        for position in bits.column(index).nonzero()[0].tolist():
            event_id, occurred_us, *key_values = rows[position]
            values = dict(zip(keys, key_values, strict=True))
            entity_type, entity_id = config.case_entity_of(event_type, values, event_id)
            found.append(
                NewAlert(
                    dedup_key=f"monitor:{name}:{event_id}",
                    source="monitor",
                    event_id=event_id,
                    event_type=event_type.name,
                    occurred_at=_at(occurred_us),
                    entity_type=entity_type,
                    entity_id=entity_id,
                    queue=rule.spec.queue or config.default_queue,
                    priority=config.priority(rule.spec.outcome),
                    rule_ids=(name,),
                    outcome=rule.spec.outcome,
                    score=rule.spec.score,
                )
            )
    return found


def _at(micros: int) -> datetime:
    moment = from_us(micros)
    assert moment is not None
    return moment
