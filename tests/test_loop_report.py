"""``decisionloop report`` on a small bank that runs the loop, every figure worked out by hand.

Four weeks of card payments by 40 customers, from 2026-03-01. Each day two customers are
compromised: a burst of four online payments, labelled fraud a day later. Weeks 1-2 are decided
by the rule ``big`` (amount >= 1000 -> review) alone; a model ``risk`` is then trained on them and
attached as active (score >= 0.5 -> review), and weeks 3-4 are decided by both. Week 3 is drawn
like the training weeks; in week 4 every amount is ten times larger (drift). Reviews open alerts,
which join one case per customer; one case is disposed ``fraud``, and a monitoring rule set
(``watch.huge``: amount >= 3000) runs over weeks 3-4. The report covers weeks 3-4.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl
import pytest

from decisionloop.cases.disposition import dispose
from decisionloop.cases.monitor import monitor
from decisionloop.cases.store import CaseFilter, NewAlert, SqlCaseStore
from decisionloop.cli.cases import case_service
from decisionloop.errors import InputError
from decisionloop.ml.train import LightGBMEstimator, fit_and_register
from decisionloop.ml.training import training_frame
from decisionloop.ops.store import SqlOpsStore
from decisionloop.project.loader import load_project
from decisionloop.reports.casework import case_figures, period_alerts
from decisionloop.reports.loop import LoopReport, loop_report
from decisionloop.runtime import open_ops_store, open_service
from decisionloop.settings import Settings, load_settings
from tests.conftest import cli, plain

PROJECT = {
    "project.yaml": "name: loop\n",
    "entities.yaml": "entities:\n  customer: {key: customer_id}\n",
    "events/core.yaml": """
event_types:
  payment:
    entities: {customer: required}
    fields:
      amount: {type: number, required: true}
      channel: {type: enum, required: true, values: [card, online]}
  label:
    fields:
      entity_type: {type: enum, required: true, values: [event]}
      entity_id: {type: string, required: true}
      label: {type: string, required: true}
""",
    "features/velocity.yaml": """
features:
  - {name: online, entity: customer, aggregation: count, windows: [1h],
     event_types: [payment], filter: "channel = 'online'"}
  - {name: spent, entity: customer, aggregation: sum, field: amount, windows: [1h],
     event_types: [payment]}
""",
    "rules/core.yaml": """
name: core
rules:
  - {id: big, when: amount >= 1000, outcome: review, score: 40}
""",
    "monitoring/watch.yaml": """
name: watch
rules:
  - {id: huge, when: amount >= 3000, outcome: review}
""",
    "strategies/payment.yaml": "event_type: payment\nrule_sets: [core]\n",
}
MODEL = """models:
  - name: risk
    version: 1
    status: active
    thresholds: [{score: 0.5, outcome: review}]
"""
START = datetime(2026, 3, 1, tzinfo=UTC)
TRAINED = START + timedelta(days=14)  # the model's training window: [START, TRAINED)
END = START + timedelta(days=28)  # the report: [TRAINED, END)
DRIFT_FROM = START + timedelta(days=21)
CUSTOMERS = 40


@dataclass(frozen=True)
class Payment:
    event_id: str
    at: datetime
    customer: str
    amount: float
    fraud_known_at: datetime | None  # when its fraud label occurred; None: honest


def payments(seed: int = 5) -> list[Payment]:
    rng = random.Random(seed)
    made: list[Payment] = []
    for day in range(28):
        scale = 10.0 if START + timedelta(days=day) >= DRIFT_FROM else 1.0
        compromised = set(rng.sample(range(CUSTOMERS), 2))
        for customer in range(CUSTOMERS):
            for _ in range(rng.randint(1, 3)):
                at = START + timedelta(days=day, seconds=rng.randint(0, 86_399))
                amount = round(rng.lognormvariate(3.5, 0.8), 2)
                if rng.random() < 0.02:
                    amount = 1500.0  # an honest large payment: ``big`` fires, wrongly
                made.append(Payment(f"p{len(made)}", at, f"C{customer}", amount * scale, None))
            if customer in compromised:
                at = START + timedelta(days=day, seconds=rng.randint(0, 80_000))
                for burst in range(4):
                    amount = 1200.0 if burst == 0 and rng.random() < 0.3 else 400.0 + burst
                    moment = at + timedelta(minutes=3 * burst)
                    known = moment + timedelta(days=1)
                    made.append(
                        Payment(f"p{len(made)}", moment, f"C{customer}", amount * scale, known)
                    )
    return made


def as_events(made: list[Payment]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for p in made:
        online = p.fraud_known_at is not None
        events.append(
            {
                "event_id": p.event_id,
                "type": "payment",
                "occurred_at": p.at.isoformat(),
                "customer_id": p.customer,
                "amount": p.amount,
                "channel": "online" if online else "card",
            }
        )
        if p.fraud_known_at is not None:
            events.append(
                {
                    "event_id": f"l-{p.event_id}",
                    "type": "label",
                    "occurred_at": p.fraud_known_at.isoformat(),
                    "entity_type": "event",
                    "entity_id": p.event_id,
                    "label": "fraud",
                }
            )
    return sorted(events, key=lambda e: e["occurred_at"])


@dataclass(frozen=True)
class Bank:
    settings: Settings
    source: Path
    made: list[Payment]
    disposed_case: int
    disposed_customer: str

    def in_period(self) -> list[Payment]:
        return [p for p in self.made if TRAINED <= p.at < END]


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Bank:
    root = tmp_path_factory.mktemp("loop")
    project = root / "project"
    for name, text in PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    settings = load_settings(project_dir=project, data_dir=root / "state", max_future_skew_s=10**9)
    made = payments()
    events = as_events(made)
    before = [e for e in events if e["occurred_at"] < TRAINED.isoformat()]
    after = [e for e in events if e["occurred_at"] >= TRAINED.isoformat()]
    service = open_service(settings)
    try:
        service.handle_sync(before, "stream")
    finally:
        service.close()
    source = settings.source_path()
    assert source is not None
    with duckdb.connect(str(source), read_only=True) as conn:
        loaded = load_project(project)
        frame = training_frame(conn, loaded, "payment", start=START, end=TRAINED)
    estimator = LightGBMEstimator(trees=30, min_child_samples=5)
    fit_and_register(frame, loaded, "risk", estimator)
    strategy = project / "strategies" / "payment.yaml"
    strategy.write_text(strategy.read_text() + MODEL)
    service = open_service(settings)
    try:
        service.handle_sync(after, "stream")
        cases = service.alerts.cases if service.alerts else None
        assert cases is not None
        # The first big fraud of the period (the model flags it too): its customer's case is
        # investigated and disposed.
        first_big = next(
            p for p in made if p.at >= TRAINED and p.amount >= 1000 and p.fraud_known_at
        )
        (case,) = cases.list(CaseFilter(entity_id=first_big.customer, status="open"))
        cases.set_status(case.id, "investigating", "ana")
        asyncio.run(dispose(service, cases, case.id, "fraud", "ana", "card holder confirmed"))
    finally:
        service.close()
    ops = open_ops_store(settings)
    try:
        monitor(source, project, TRAINED, END, case_service(settings, ops), store=ops)
    finally:
        ops.close()
    return Bank(settings, source, made, case.id, first_big.customer)


def report_of(bank: Bank, source: Path | duckdb.DuckDBPyConnection | None = None) -> LoopReport:
    ops = open_ops_store(bank.settings)
    try:
        cases = case_service(bank.settings, ops).store
        return loop_report(
            source if source is not None else bank.source,
            bank.settings.project_dir,
            TRAINED,
            END,
            cases=cases,
            store=ops,
        )
    finally:
        ops.close()


def stored_scores(source: Path) -> dict[str, float]:
    """What the engine recorded: each decision's ``risk@v1`` reason score."""
    with duckdb.connect(str(source), read_only=True) as conn:
        bodies = conn.execute("SELECT body FROM decisions").fetchall()
    scores = {}
    for (body,) in bodies:
        decision = orjson.loads(body)
        for reason in decision["reasons"]:
            if reason["kind"] == "model" and reason["id"] == "risk@v1":
                scores[decision["event_id"]] = reason["values"]["score"]
    return scores


def closed_case(bank: Bank) -> Any:
    ops = open_ops_store(bank.settings)
    try:
        return case_service(bank.settings, ops).store.case(bank.disposed_case)
    finally:
        ops.close()


def known_fraud(p: Payment) -> bool:
    """Fraud by a label that occurred before the end of the period."""
    return p.fraud_known_at is not None and p.fraud_known_at < END


def test_rule_figures_and_its_cases(bank: Bank) -> None:
    done = report_of(bank)
    period = bank.in_period()
    (big,) = done.rules.filter(pl.col("rule_id") == "big").iter_rows(named=True)
    hits = [p for p in period if p.amount >= 1000]
    frauds = [p for p in period if known_fraud(p)]
    caught = [p for p in hits if known_fraud(p)]
    assert (big["events"], big["hits"]) == (len(period), len(hits))
    assert (big["labelled_events"], big["true_positives"]) == (len(frauds), len(caught))
    assert 0 < len(caught) < len(hits)
    assert big["precision"] == pytest.approx(len(caught) / len(hits))
    assert big["recall"] == pytest.approx(len(caught) / len(frauds))
    assert big["false_positives_per_true_positive"] == pytest.approx(
        (len(hits) - len(caught)) / len(caught)
    )
    # Every hit was a review: one alert each, joining its customer's one open case.
    assert big["alerts"] == len(hits)
    assert big["cases_opened"] == len({p.customer for p in hits})
    assert (big["cases_closed"], big["disposed_fraud"], big["disposed_not_fraud"]) == (1, 1, 0)
    case = closed_case(bank)
    took = (case.closed_at - case.opened_at).total_seconds()
    assert big["disposition_median_s"] == pytest.approx(took)
    assert big["disposition_p90_s"] == pytest.approx(took)


def test_monitoring_rules_get_their_case_figures(bank: Bank) -> None:
    done = report_of(bank)
    (huge,) = done.rules.filter(pl.col("status") == "monitoring").iter_rows(named=True)
    hits = [p for p in bank.in_period() if p.amount >= 3000]
    assert (huge["rule_id"], huge["rule_set"]) == ("watch.huge", "watch")
    assert huge["alerts"] == len(hits) > 0
    assert huge["cases_opened"] == len({p.customer for p in hits})
    assert huge["cases_closed"] == 0
    assert huge["precision"] is None  # not backtested: case figures only


def test_model_figures_from_its_recorded_scores(bank: Bank) -> None:
    done = report_of(bank)
    (risk,) = done.models.iter_rows(named=True)
    period = bank.in_period()
    scores = stored_scores(bank.source)
    assert all(p.event_id in scores for p in period)  # the model scored every period payment
    flagged = [p for p in period if scores[p.event_id] >= 0.5]
    caught = [p for p in flagged if known_fraud(p)]
    frauds = [p for p in period if known_fraud(p)]
    assert (risk["model"], risk["version"], risk["status"]) == ("risk", 1, "active")
    assert risk["threshold"] == 0.5
    assert (risk["events"], risk["scored_from_decisions"], risk["scored_offline"]) == (
        len(period),
        len(period),
        0,
    )
    assert (risk["flagged"], risk["true_positives"]) == (len(flagged), len(caught))
    assert len(caught) > 0
    assert risk["labelled_events"] == len(frauds)
    assert risk["precision"] == pytest.approx(len(caught) / len(flagged))
    assert risk["recall"] == pytest.approx(len(caught) / len(frauds))
    assert risk["false_positives_per_true_positive"] == pytest.approx(
        (len(flagged) - len(caught)) / len(caught)
    )
    # Each flag asked for a review: one decision alert (monitoring hits are not the model's).
    assert risk["alerts"] == len(flagged)
    customers = {p.customer for p in flagged}
    assert risk["cases_opened"] == len(customers)
    assert bank.disposed_customer in customers
    assert (risk["cases_closed"], risk["disposed_fraud"]) == (1, 1)
    # The reference: the training window, recomputed.
    assert (risk["reference_start"], risk["reference_end"]) == (START, TRAINED)
    assert risk["reference_events"] == len([p for p in bank.made if p.at < TRAINED])
    assert risk["problem"] is None


def test_the_drifted_week_is_flagged_and_the_stable_one_is_not(bank: Bank) -> None:
    done = report_of(bank)
    drift = done.drift
    inputs = ["amount", "customer.online_1h", "customer.spent_1h"]
    assert sorted(drift["variable"].unique()) == sorted(["score", *inputs])
    assert drift.filter(pl.col("variable") == "score")["kind"].unique().to_list() == ["score"]
    stable = drift.filter(pl.col("week_start") == TRAINED)
    drifted = drift.filter(pl.col("week_start") == DRIFT_FROM)
    assert stable["week_end"].unique().to_list() == [DRIFT_FROM]
    assert stable.height == drifted.height == 4
    period = bank.in_period()
    assert stable["events"].unique().to_list() == [len([p for p in period if p.at < DRIFT_FROM])]
    assert stable["level"].unique().to_list() == ["ok"], stable
    for name in ("amount", "customer.spent_1h"):
        (row,) = drifted.filter(pl.col("variable") == name).iter_rows(named=True)
        assert row["level"] == "alert"
        assert row["psi"] >= 0.25
    (risk,) = done.models.iter_rows(named=True)
    assert risk["drift_level"] == "alert"
    assert risk["worst_psi"] == drift["psi"].max()


def test_scores_missing_from_decisions_are_recomputed_identically(
    bank: Bank, tmp_path: Path
) -> None:
    """The same source without stored decisions: every score comes from the point-in-time frame
    and the model, and the figures do not move."""
    copy = tmp_path / "source.duckdb"
    shutil.copy(bank.source, copy)
    with duckdb.connect(str(copy)) as conn:
        conn.execute("DELETE FROM decisions")
        offline = report_of(bank, conn)
    recorded = report_of(bank)
    (row,) = offline.models.iter_rows(named=True)
    assert (row["scored_from_decisions"], row["scored_offline"]) == (0, row["events"])
    same = [c for c in offline.models.columns if not c.startswith("scored_")]
    assert offline.models.select(same).equals(recorded.models.select(same))
    assert offline.drift.equals(recorded.drift)


def test_case_figures_by_hand_with_chosen_times() -> None:
    """Three cases disposed 1 h, 2 h and 10 h after opening, a fourth still open; alerts about
    events outside the period do not count."""
    store = SqlCaseStore("sqlite://")
    opened_at = datetime(2026, 3, 20, 9, tzinfo=UTC)

    def alert(n: int, customer: str, day: int) -> NewAlert:
        return NewAlert(
            dedup_key=f"decision:e{n}",
            source="decision",
            event_id=f"e{n}",
            event_type="payment",
            occurred_at=START + timedelta(days=day),
            entity_type="customer",
            entity_id=customer,
            queue="fraud",
            priority="medium",
            rule_ids=("big",),
        )

    alerts = [alert(0, "C0", 15), alert(1, "C0", 16), alert(2, "C1", 15), alert(3, "C2", 15)]
    alerts += [alert(4, "C3", 15), alert(5, "C4", 2)]  # the last: before the period
    store.open_alerts(alerts, opened_at, lambda queue, priority: timedelta(days=3))
    cases = {c.entity_id: c.id for c in store.cases(CaseFilter())}
    disposed = (("C0", 1, "fraud"), ("C1", 2, "not_fraud"), ("C2", 10, "inconclusive"))
    for customer, hours, disposition in disposed:
        closed_at = opened_at + timedelta(hours=hours)
        values = {"status": "closed", "disposition": disposition, "closed_us": _us(closed_at)}
        store.change(cases[customer], "ana", "case.dispose", closed_at, lambda c, v=values: (v, {}))
    found = period_alerts(store, TRAINED, END)
    assert sorted(found["event_id"]) == ["e0", "e1", "e2", "e3", "e4"]
    figures = case_figures(found)
    assert (figures["alerts"], figures["cases_opened"], figures["cases_closed"]) == (5, 4, 3)
    assert (
        figures["disposed_fraud"],
        figures["disposed_not_fraud"],
        figures["disposed_inconclusive"],
    ) == (1, 1, 1)
    assert figures["disposition_median_s"] == 2 * 3600
    # 90th percentile of (1, 2, 10) h, linear: position 0.9 * 2 = 1.8, so 2 + 0.8 * (10 - 2).
    assert figures["disposition_p90_s"] == pytest.approx((2 + 0.8 * 8) * 3600)
    empty = case_figures(found.filter(pl.col("case_id") == -1))
    assert (empty["alerts"], empty["disposition_median_s"]) == (0, None)
    assert period_alerts(None, TRAINED, END).height == 0
    store.close()


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_the_command_prints_the_tables_and_writes_json(bank: Bank, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    common = [
        "--project",
        bank.settings.project_dir,
        "--data-dir",
        bank.settings.data_dir,
    ]
    result = cli("report", "--from", "2026-03-15", "--to", "2026-03-28", "--json", out, *common)
    assert result.exit_code == 0, result.output
    text = plain(result.output)
    assert "rules, from 2026-03-15 00:00 until 2026-03-29 00:00 UTC" in text
    assert "risk v1" in text
    assert "drift of risk v1" in text
    assert "ALERT" in text
    document = orjson.loads(out.read_bytes())
    assert document["psi"] == {"watch": 0.1, "alert": 0.25, "bins": 10, "epsilon": 1e-4}
    assert {r["rule_id"] for r in document["rules"]} == {"big", "watch.huge"}
    assert [m["model"] for m in document["models"]] == ["risk"]
    assert {d["level"] for d in document["drift"]} >= {"ok", "alert"}
    # A watch level above the alert level is refused, as is a period that ends before it starts.
    bad = cli("report", "--from", "2026-03-15", "--to", "2026-03-28", "--psi-watch", "0.5", *common)
    assert bad.exit_code == 2
    assert "--psi-alert" in plain(bad.output)
    backwards = cli("report", "--from", "2026-03-28", "--to", "2026-03-01", *common)
    assert backwards.exit_code == 2
    assert "empty period" in plain(backwards.output)


def test_an_empty_period_and_bad_bins_are_refused(bank: Bank) -> None:
    with pytest.raises(InputError, match="empty period"):
        loop_report(bank.source, bank.settings.project_dir, END, TRAINED)
    ops = open_ops_store(bank.settings)
    try:
        assert isinstance(ops, SqlOpsStore)
        with pytest.raises(InputError) as bad:
            loop_report(bank.source, bank.settings.project_dir, TRAINED, END, store=ops, bins=1)
        assert bad.value.problems[0].where == "--bins"
    finally:
        ops.close()


def test_a_model_missing_from_the_registry_is_reported_not_fatal(
    bank: Bank, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(bank.settings.project_dir, project)
    strategy = project / "strategies" / "payment.yaml"
    strategy.write_text(strategy.read_text() + "  - {name: risk, version: 9, status: shadow}\n")
    done = loop_report(bank.source, project, TRAINED, END)
    present, missing = done.models.iter_rows(named=True)
    assert (present["version"], present["problem"]) == (1, None)
    assert (missing["version"], missing["status"]) == (9, "shadow")
    assert "no model risk v9" in missing["problem"]
    assert missing["flagged"] is None
    assert missing["events"] == present["events"]
    assert done.drift["version"].unique().to_list() == [1]
    # Without a case store, no alerts: the decision figures stand alone.
    assert present["alerts"] == 0
    assert present["flagged"] > 0
