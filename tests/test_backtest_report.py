"""The per-rule backtest report on a small bank whose every figure can be worked out by hand.

Payments of two days (2026-06-01 and 06-02), decided by the service as they come, so that the
source layer holds what production would: events, decisions, and fraud labels that arrive later.

=====  ================  ===  ========  ======  ==========================  ====================
event  time (UTC)        cust amount    chan    project rules that fire     current outcome
=====  ================  ===  ========  ======  ==========================  ====================
p0     05-31 23:55       C3   5000      card    (before the period)
p1     06-01 10:00       C1   1200      card    big                         review
p2     06-01 10:10       C1   50        card    -                           approve
p3     06-01 10:20       C1   1500      trans.  big, burst, watch, draft    decline (score 60)
p4     06-01 12:00       C2   600       trans.  watch, draft                approve
p5     06-02 09:00       C2   20        card    -                           approve
p6     06-02 09:30       C2   2000      card    big                         review
p7     06-03 10:00       C1   2000      card    (after the period)
=====  ================  ===  ========  ======  ==========================  ====================

Labels: p3 fraud on 06-02 (by entity_id), p4 fraud on 06-01 (by refers_to_event_id), p6 fraud
on 06-05 (after the period), p1 ``not_fraud``. A failed login on 06-01 is stored, never decided.
The candidate file adds ``trusted_burst`` (p3, score -30) and ``mid_amount`` (p1, p3, p4).

Rules reading labels and lists (``has_label``, ``in_list``) are tested on banks of their own.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl
import pytest

from decisionloop.errors import DefinitionError, InputError, NotFoundError
from decisionloop.ops.labels import LabelService, NewLabel
from decisionloop.ops.store import SqlOpsStore
from decisionloop.project.loader import load_project
from decisionloop.rules.report import REPORT_SCHEMA, backtest
from decisionloop.runtime import open_ops_store, open_service
from decisionloop.settings import Settings, load_settings
from tests.conftest import cli, plain

PROJECT = {
    "project.yaml": "name: bt\n",
    "entities.yaml": "entities:\n  customer: {key: customer_id}\n",
    "events/core.yaml": """
event_types:
  payment:
    entities: {customer: required}
    fields:
      amount: {type: number, required: true}
      channel: {type: enum, required: true, values: [card, transfer]}
  login:
    entities: {customer: required}
    fields:
      success: {type: boolean, required: true}
  label:
    fields:
      entity_type: {type: enum, required: true, values: [event, customer]}
      entity_id: {type: string, required: true}
      label: {type: string, required: true}
      refers_to_event_id: {type: string}
""",
    "features/velocity.yaml": """
features:
  - {name: payments, entity: customer, aggregation: count, windows: [1h],
     event_types: [payment]}
""",
    "rules/core.yaml": """
name: core
rules:
  - {id: big, when: amount >= 1000, outcome: review, score: 40}
  - {id: burst, when: customer.payments_1h >= 3, outcome: challenge, score: 20}
  - {id: watch, when: channel = 'transfer', outcome: challenge, status: shadow}
  - {id: draft, when: channel = 'transfer' and amount >= 500, outcome: decline, status: draft}
  - {id: old, when: amount > 0, outcome: decline, status: retired}
""",
    "strategies/payment.yaml": """
event_type: payment
rule_sets: [core]
thresholds:
  - {score: 60, outcome: decline}
""",
}
CANDIDATES = """
name: ideas
rules:
  - id: trusted_burst
    when: channel = 'transfer' and customer.payments_1h >= 3
    score: -30
  - {id: mid_amount, when: amount between 500 and 1500, outcome: challenge, status: draft}
"""


def payment(event_id: str, at: str, customer: str, amount: float, channel: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "payment",
        "occurred_at": f"2026-{at}:00+00:00",
        "customer_id": customer,
        "amount": amount,
        "channel": channel,
    }


def label(event_id: str, at: str, value: str, **target: str) -> dict[str, Any]:
    """A label on an event: ``entity_id`` names it unless ``target`` says otherwise."""
    event = {"event_id": event_id, "type": "label", "occurred_at": f"2026-{at}:00+00:00"}
    return event | {"label": value, "entity_type": "event"} | target


EVENTS = [
    payment("p0", "05-31T23:55", "C3", 5000, "card"),
    payment("p1", "06-01T10:00", "C1", 1200, "card"),
    {
        "event_id": "l1",
        "type": "login",
        "occurred_at": "2026-06-01T10:05:00+00:00",
        "customer_id": "C1",
        "success": False,
    },
    label("n1", "06-01T11:00", "not_fraud", entity_id="p1"),
    payment("p2", "06-01T10:10", "C1", 50, "card"),
    payment("p3", "06-01T10:20", "C1", 1500, "transfer"),
    payment("p4", "06-01T12:00", "C2", 600, "transfer"),
    label(
        "f4",
        "06-01T18:00",
        "fraud",
        entity_type="customer",
        entity_id="C2",
        refers_to_event_id="p4",
    ),
    label("f3", "06-02T08:00", "fraud", entity_id="p3"),
    payment("p5", "06-02T09:00", "C2", 20, "card"),
    payment("p6", "06-02T09:30", "C2", 2000, "card"),
    payment("p7", "06-03T10:00", "C1", 2000, "card"),
    label("f6", "06-05T10:00", "fraud", entity_id="p6"),
]
JUNE_1, JUNE_3 = date(2026, 6, 1), date(2026, 6, 3)


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(project folder, source-layer file) with the events above decided by the service."""
    root = tmp_path_factory.mktemp("backtest")
    project = root / "project"
    for name, text in PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    (root / "ideas.yaml").write_text(CANDIDATES)
    settings = load_settings(project_dir=project, data_dir=root / "state")
    service = open_service(settings)
    try:
        service.handle_sync(EVENTS, "stream")
    finally:
        service.close()
    source = settings.source_path()
    assert source is not None
    return project, source


@pytest.fixture(scope="module")
def report(bank: tuple[Path, Path]) -> pl.DataFrame:
    project, source = bank
    return backtest(source, project, JUNE_1, JUNE_3, rules=project.parent / "ideas.yaml")


def by_rule(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["rule_id"]: row for row in frame.iter_rows(named=True)}


def test_hits_rates_precision_and_recall(report: pl.DataFrame) -> None:
    assert report.schema == pl.Schema(REPORT_SCHEMA)
    rows = by_rule(report)
    # Retired rules are left out; drafts, shadows and candidates are in.
    assert list(rows) == ["big", "burst", "watch", "draft", "trusted_burst", "mid_amount"]
    assert [rows[r]["status"] for r in rows] == [
        "active",
        "active",
        "shadow",
        "draft",
        "candidate",
        "candidate",
    ]
    # Six payments in the period: not p0 or p7, not the login or the labels.
    assert {r["events"] for r in rows.values()} == {6}
    # p3 and p4: p6's label arrives after the period, p1's is not a fraud label.
    assert {r["labelled_events"] for r in rows.values()} == {2}
    big = rows["big"]
    assert (big["hits"], big["true_positives"]) == (3, 1)  # p1, p3, p6
    assert big["hit_rate"] == pytest.approx(3 / 6)
    assert big["alerts_per_day"] == pytest.approx(3 / 2)
    assert big["precision"] == pytest.approx(1 / 3)
    assert big["recall"] == pytest.approx(1 / 2)
    burst = rows["burst"]  # p3 only: p1, p2, p3 within the hour; the login is no payment
    assert (burst["hits"], burst["precision"], burst["recall"]) == (1, 1.0, 0.5)
    assert (rows["watch"]["hits"], rows["watch"]["recall"]) == (2, 1.0)  # p3, p4
    mid_amount = rows["mid_amount"]  # p1, p3, p4
    assert (mid_amount["hits"], mid_amount["precision"]) == (3, pytest.approx(2 / 3))


def test_overlap_with_other_rules(report: pl.DataFrame) -> None:
    rows = by_rule(report)
    big = rows["big"]  # p1 is shared with mid_amount, p3 with five rules, p6 is its own
    assert big["overlap_share"] == pytest.approx(2 / 3)
    assert big["unique_hits"] == 1  # p6
    assert big["top_overlap_rule"] == "mid_amount"  # p1 and p3; the others p3 only
    assert big["top_overlap_share"] == pytest.approx(2 / 3)
    watch = rows["watch"]
    assert (watch["overlap_share"], watch["unique_hits"]) == (1.0, 0)
    assert (watch["top_overlap_rule"], watch["top_overlap_share"]) == ("draft", 1.0)
    assert rows["trusted_burst"]["top_overlap_rule"] == "big"  # ties: the first declared


def test_outcome_changes_of_rules_that_do_not_decide_today(report: pl.DataFrame) -> None:
    rows = by_rule(report)
    for active in ("big", "burst"):
        assert rows[active]["escalated"] is None
        assert rows[active]["outcome_changes"] is None
    # p3 is declined already; p4 (approved) would be declined.
    draft = rows["draft"]
    assert (draft["escalated"], draft["relaxed"]) == (1, 0)
    assert draft["escalated_event_ids"] == ["p4"]
    assert draft["outcome_changes"] == [{"from": "approve", "to": "decline", "events": 1}]
    assert rows["watch"]["outcome_changes"] == [{"from": "approve", "to": "challenge", "events": 1}]
    # A negative score takes p3 under the decline threshold: review (big) is what remains.
    trusted = rows["trusted_burst"]
    assert (trusted["escalated"], trusted["relaxed"]) == (0, 1)
    assert trusted["relaxed_event_ids"] == ["p3"]
    assert trusted["outcome_changes"] == [{"from": "decline", "to": "review", "events": 1}]
    # p1 is under review and p3 declined already (more severe than challenge); p4 changes.
    assert rows["mid_amount"]["escalated_event_ids"] == ["p4"]


def test_current_outcomes_are_the_decisions_the_service_took(
    bank: tuple[Path, Path], tmp_path: Path
) -> None:
    """The baseline the changes are measured against is recomputed from the active rules' hits;
    it must be the outcome the service stored for every event. Probes that fire everywhere with
    each outcome reveal it: "to_review" escalates exactly the events approved or challenged."""
    project, source = bank
    probes = tmp_path / "probes.yaml"
    probes.write_text(
        "name: probes\nrules:\n"
        + "".join(
            f"  - {{id: to_{o}, when: amount >= 0, outcome: {o}}}\n"
            for o in ("challenge", "review", "decline")
        )
    )
    with duckdb.connect(str(source), read_only=True) as conn:
        stored = dict(conn.sql("SELECT event_id, outcome FROM decisions").fetchall())
        rows = by_rule(backtest(conn, project, JUNE_1, date(2026, 6, 6), rules=probes))
    below = {
        o: set(rows[f"to_{o}"]["escalated_event_ids"]) for o in ("challenge", "review", "decline")
    }
    baseline = {
        event: "approve"
        if event in below["challenge"]
        else "challenge"
        if event in below["review"]
        else "review"
        if event in below["decline"]
        else "decline"
        for event in stored
        if event != "p0"
    }
    assert baseline == {e: o for e, o in stored.items() if e != "p0"}
    assert set(baseline.values()) == {"approve", "review", "decline"}


def test_a_label_counts_once_it_is_known(bank: tuple[Path, Path]) -> None:
    project, source = bank
    # Through 06-05 (p6's label is known, p7 joins the period): big hits p1, p3, p6, p7.
    later = by_rule(backtest(source, project, JUNE_1, date(2026, 6, 6)))["big"]
    assert (later["events"], later["labelled_events"]) == (7, 3)
    assert (later["hits"], later["true_positives"]) == (4, 2)
    assert later["alerts_per_day"] == pytest.approx(4 / 5)
    # A period ending just before the label, with the same events: p6 is not a positive yet.
    before = by_rule(backtest(source, project, JUNE_1, datetime(2026, 6, 5, 9, 59, tzinfo=UTC)))[
        "big"
    ]
    assert (before["hits"], before["labelled_events"], before["true_positives"]) == (4, 2, 1)


def test_errors(bank: tuple[Path, Path], tmp_path: Path) -> None:
    project, source = bank
    with pytest.raises(InputError):
        backtest(source, project, JUNE_3, JUNE_1)
    with pytest.raises(NotFoundError, match="nothing to backtest"):
        backtest(source, project, date(2025, 1, 1), date(2025, 2, 1))
    with pytest.raises(NotFoundError):
        backtest(source, project, JUNE_1, JUNE_3, rules=tmp_path / "missing.yaml")
    with pytest.raises(NotFoundError):
        backtest(tmp_path / "none.duckdb", project, JUNE_1, JUNE_3)


def test_candidate_rule_errors_point_into_the_file(bank: tuple[Path, Path], tmp_path: Path) -> None:
    project, source = bank
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nrules:\n"
        "  - {id: big, when: amount > 1, outcome: review}\n"
        "  - {id: typo, when: amuont > 1, outcome: block}\n"
    )
    with pytest.raises(DefinitionError) as caught:
        backtest(source, load_project(project), JUNE_1, JUNE_3, rules=bad)
    reasons = {(p.line, p.reason.split(";")[0]) for p in caught.value.problems}
    assert (3, "rule id also used in rule set 'core'") in reasons
    assert any(line == 4 and "'block'" in reason for line, reason in reasons)
    assert (4, "unknown name 'amuont'") in reasons  # all at once, in file order
    assert [p.line for p in caught.value.problems] == [3, 4, 4]
    bad.write_text("name: bad\nrules:\n  - {id: typo, when: amuont > 1, outcome: review}\n")
    with pytest.raises(DefinitionError) as caught:
        backtest(source, project, JUNE_1, JUNE_3, rules=bad)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(bad), 3)
    assert "unknown name 'amuont'; did you mean amount" in problem.reason


def test_command_line_table_json_and_parquet(
    bank: tuple[Path, Path], tmp_path: Path, isolated: None
) -> None:
    project, source = bank
    data_dir = source.parent
    out_json, out_parquet = tmp_path / "report.json", tmp_path / "report.parquet"
    result = cli(
        "backtest",
        "--from",
        "2026-06-01",
        "--to",
        "2026-06-02",
        "--rules",
        project.parent / "ideas.yaml",
        "--json",
        out_json,
        "--parquet",
        out_parquet,
        "--project",
        project,
        "--data-dir",
        data_dir,
    )
    assert result.exit_code == 0, result.output
    text = plain(result.output)
    assert "payment: 6 events, 2 labelled fraud" in text
    assert "trusted_burst" in text
    assert "candidate" in text
    document = orjson.loads(out_json.read_bytes())
    assert (document["from"], document["to"]) == (
        "2026-06-01T00:00:00+00:00",
        "2026-06-03T00:00:00+00:00",
    )
    rules = {row["rule_id"]: row for row in document["rules"]}
    assert (rules["big"]["hits"], rules["big"]["true_positives"]) == (3, 1)
    assert rules["draft"]["escalated_event_ids"] == ["p4"]
    assert pl.read_parquet(out_parquet).equals(
        backtest(source, project, JUNE_1, JUNE_3, rules=project.parent / "ideas.yaml")
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "2026-13-01", "--to", "2026-06-02"), "bad --from"),
        (("--from", "2026-06-03", "--to", "2026-06-01"), "empty period"),
        (("--from", "2025-01-01", "--to", "2025-01-31"), "nothing to backtest"),
        (("--from", "2026-06-01", "--to", "2026-06-02", "--rules", "nope.yaml"), "not found"),
    ],
)
def test_command_line_errors_exit_2(
    bank: tuple[Path, Path], isolated: None, args: tuple[str, ...], message: str
) -> None:
    project, source = bank
    result = cli("backtest", *args, "--project", project, "--data-dir", source.parent)
    assert result.exit_code == 2
    assert message in plain(result.output)


# -- has_label and in_list: as of each event's decision -------------------------------------------
LOOKUP_RULES = """
name: core
rules:
  - {id: listed, when: "in_list('blocked', customer_id)", outcome: decline}
  - {id: watched, when: "has_label(customer, 'watch')", outcome: review, status: shadow}
"""


def lookup_bank(root: Path) -> Settings:
    """The payments project with rules that read labels and lists instead of its own rules."""
    project = root / "project"
    for name, text in (PROJECT | {"rules/core.yaml": LOOKUP_RULES}).items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    return load_settings(project_dir=project, data_dir=root / "state")


def fired(answer: dict[str, Any], rule: str) -> bool:
    return any(reason["id"] == rule for reason in answer["reasons"])


def test_lookups_see_the_labels_in_force_when_each_event_was_decided(
    tmp_path: Path, isolated: None
) -> None:
    """Decided by the service before, while and after C1 carries ``watch``: the backtest hits
    exactly the events the service decided while the label was in force, as the service did."""
    settings = lookup_bank(tmp_path)
    service = open_service(settings)
    try:
        assert service.ops is not None
        labels = LabelService(service.ops, service.engine.lookups, ["customer"])
        answers = service.handle_sync([payment("q1", "06-01T10:00", "C1", 10, "card")], "stream")
        labels.add("customer", "C1", NewLabel("watch", "case 7", "ana"))
        answers += service.handle_sync(
            [
                payment("q2", "06-01T11:00", "C1", 20, "card"),
                payment("q3", "06-01T11:10", "C2", 30, "card"),  # another customer
            ],
            "stream",
        )
        labels.remove("customer", "C1", "watch", "ana", "case closed")
        answers += service.handle_sync([payment("q4", "06-01T12:00", "C1", 40, "card")], "stream")
        # Imported without a decision: as of its event time, long before the label.
        service.handle_sync([payment("q5", "06-01T11:30", "C1", 50, "card")], "ingest")
        # After every decision, C2 is labelled too: no event of the period saw it.
        labels.add("customer", "C2", NewLabel("watch", "late", "ana"))
    finally:
        service.close()
    online = [a["event_id"] for a in answers if fired(a, "watched")]
    assert online == ["q2"]
    source = settings.source_path()
    assert source is not None
    store = open_ops_store(settings)
    try:
        rows = by_rule(backtest(source, settings.project_dir, JUNE_1, JUNE_3, store=store))
    finally:
        store.close()
    watched = rows["watched"]
    assert (watched["events"], watched["hits"]) == (5, 1)
    assert watched["escalated_event_ids"] == online  # approved today, review with the rule
    # Without the store there is no label at all; the command line opens the data dir's store.
    bare = by_rule(backtest(source, settings.project_dir, JUNE_1, JUNE_3))["watched"]
    assert bare["hits"] == 0
    out = tmp_path / "report.json"
    result = cli(
        "backtest",
        *("--from", "2026-06-01", "--to", "2026-06-02", "--json", out),
        *("--project", settings.project_dir, "--data-dir", settings.data_dir),
    )
    assert result.exit_code == 0, result.output
    document = orjson.loads(out.read_bytes())
    assert {r["rule_id"]: r["escalated_event_ids"] for r in document["rules"]}["watched"] == ["q2"]


def test_a_label_or_list_item_added_after_the_period_does_not_count(tmp_path: Path) -> None:
    """Imported events (decided as of their event time) against a history with known times: C1
    is watched from 06-01 11:00, C2 from 06-04 (after the period); C2 is blocked on 06-02 from
    00:00 to 12:00 only."""
    settings = lookup_bank(tmp_path)
    service = open_service(settings)
    try:
        events = [
            payment("i1", "06-01T10:00", "C1", 10, "card"),  # before C1's label
            payment("i2", "06-01T12:00", "C1", 10, "card"),  # watched
            payment("i3", "06-02T06:00", "C2", 10, "card"),  # blocked
            payment("i4", "06-02T13:00", "C2", 10, "card"),  # unblocked again
            payment("i5", "06-04T12:00", "C2", 10, "card"),  # watched, after the period
        ]
        service.handle_sync(events, "ingest")
    finally:
        service.close()
    source = settings.source_path()
    assert source is not None
    at = {
        "c1": datetime(2026, 6, 1, 11, tzinfo=UTC),
        "c2": datetime(2026, 6, 4, tzinfo=UTC),
        "list": datetime(2026, 5, 1, tzinfo=UTC),
        "in": datetime(2026, 6, 2, tzinfo=UTC),
        "out": datetime(2026, 6, 2, 12, tzinfo=UTC),
    }
    store = SqlOpsStore("sqlite://")
    try:
        for customer in ("C1", "C2"):
            when = at[customer.lower()]
            store.add_label(
                "customer", customer, "watch", reason="r", source="api", author="a", at=when
            )
        store.create_list("blocked", kind="string", description="", author="a", at=at["list"])
        store.add_item("blocked", "C2", author="a", reason="r", at=at["in"])
        store.remove_item("blocked", "C2", author="a", reason="r", at=at["out"])
        period = by_rule(backtest(source, settings.project_dir, JUNE_1, JUNE_3, store=store))
        later = by_rule(
            backtest(source, settings.project_dir, JUNE_1, date(2026, 6, 6), store=store)
        )
    finally:
        store.close()
    assert period["watched"]["events"] == 4
    assert period["watched"]["hits"] == 1
    assert period["watched"]["escalated_event_ids"] == ["i2"]  # not C2: labelled after the period
    assert period["listed"]["hits"] == 1  # i3 only
    assert period["watched"]["outcome_changes"] == [
        {"from": "approve", "to": "review", "events": 1}
    ]
    # Over a period that includes it, the event decided after C2's label does count.
    assert later["watched"]["escalated_event_ids"] == ["i2", "i5"]
    assert later["listed"]["hits"] == 1
