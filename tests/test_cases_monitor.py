"""Post-event monitoring and the ``cases`` command line, on a small bank of stored events.

=====  ===========  ====  ======  ============  =====================================
event  time (UTC)   cust  amount  channel       monitoring rules that hit
=====  ===========  ====  ======  ============  =====================================
t1     06-01 10:00  C1    1500    card_present  watch.big
t2     06-01 11:00  C1    2000    card_present  watch.big
t3     06-01 12:00  C2    100     atm           watch.cash (queue aml)
t4     06-02 09:00  C3    50      card_present  -
t5     06-03 09:00  C3    1200    card_present  watch.big (after the first window)
=====  ===========  ====  ======  ============  =====================================

``watch.everything`` is a draft: evaluated, never alerted.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from decisionloop.cases.monitor import monitor
from decisionloop.cli.cases import case_service
from decisionloop.errors import DefinitionError, NotFoundError
from decisionloop.runtime import open_ops_store, open_service
from decisionloop.settings import Settings
from tests.conftest import cli, make_settings, plain, transaction

WATCH = """
name: watch
rules:
  - {id: big, when: amount >= 1000, outcome: review}
  - {id: cash, when: channel = 'atm', outcome: decline, queue: aml}
  - {id: everything, when: amount > 0, status: draft}
"""
EVENTS = [
    transaction("t1", occurred_at="2026-06-01T10:00:00+00:00", customer_id="C1", amount=1500.0),
    transaction("t2", occurred_at="2026-06-01T11:00:00+00:00", customer_id="C1", amount=2000.0),
    transaction(
        "t3", occurred_at="2026-06-01T12:00:00+00:00", customer_id="C2", channel="atm", amount=100
    ),
    transaction("t4", occurred_at="2026-06-02T09:00:00+00:00", customer_id="C3", amount=50.0),
    transaction("t5", occurred_at="2026-06-03T09:00:00+00:00", customer_id="C3", amount=1200.0),
]


@pytest.fixture
def bank(project_dir: Path, tmp_path: Path, isolated: None) -> Settings:
    (project_dir / "monitoring").mkdir(exist_ok=True)
    (project_dir / "monitoring" / "watch.yaml").write_text(WATCH)
    settings = make_settings(project_dir, tmp_path / "state")
    service = open_service(settings)
    try:
        service.handle_sync(EVENTS, "stream")
    finally:
        service.close()
    return settings


def run(settings: Settings, start: date, end: date, **options: Any) -> Any:
    source = settings.source_path()
    assert source is not None
    ops = open_ops_store(settings)
    try:
        cases = case_service(settings, ops)
        done = monitor(source, settings.project_dir, start, end, cases, store=ops, **options)
        return done, [cases.view(c.id) for c in cases.list(_all())]
    finally:
        ops.close()


def _all() -> Any:
    from decisionloop.cases.store import CaseFilter

    return CaseFilter()


def test_monitoring_opens_alerts_once_per_rule_and_event(bank: Settings) -> None:
    first, views = run(bank, date(2026, 6, 1), date(2026, 6, 3))
    assert first.events == 4
    assert first.hits == {"watch.big": 2, "watch.cash": 1}
    assert (first.alerts, first.repeats, len(first.cases_opened)) == (3, 0, 2)
    by_entity = {(v.case.entity_id, v.case.queue): v for v in views}
    assert set(by_entity) == {("C1", "fraud"), ("C2", "aml")}
    c1 = by_entity[("C1", "fraud")]
    assert [a.new.event_id for a in c1.alerts] == ["t1", "t2"]
    assert {a.new.source for a in c1.alerts} == {"monitor"}
    assert c1.alerts[0].new.rule_ids == ("watch.big",)
    assert by_entity[("C2", "aml")].case.priority == "high"  # the rule's outcome is decline

    again, views_again = run(bank, date(2026, 6, 1), date(2026, 6, 3))
    assert (again.alerts, again.repeats, again.cases_opened) == (0, 3, [])
    assert [len(v.alerts) for v in views_again] == [len(v.alerts) for v in views]

    wider, views_wider = run(bank, date(2026, 6, 1), date(2026, 6, 4))
    assert (wider.alerts, wider.repeats, len(wider.cases_opened)) == (1, 3, 1)
    assert {v.case.entity_id for v in views_wider} == {"C1", "C2", "C3"}


def test_monitoring_needs_rules_and_reports_their_problems(bank: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nrules:\n  - {id: oops, when: amount >>> 3}\n")
    with pytest.raises(DefinitionError) as raised:
        run(bank, date(2026, 6, 1), date(2026, 6, 3), rules=[bad])
    assert raised.value.problems[0].file is not None
    assert raised.value.problems[0].line == 3
    for rule_set in (bank.project_dir / "monitoring").glob("*.yaml"):
        rule_set.unlink()
    with pytest.raises(NotFoundError):
        run(bank, date(2026, 6, 1), date(2026, 6, 3))


def test_monitor_and_cases_commands(bank: Settings) -> None:
    where = ["--project", bank.project_dir, "--data-dir", bank.data_dir]
    first = cli("monitor", "--from", "2026-06-01", "--to", "2026-06-02", *where)
    assert first.exit_code == 0, first.output
    assert "3 new alert(s), 0 already known; 2 case(s) opened" in plain(first.output)
    again = cli("monitor", "--from", "2026-06-01", "--to", "2026-06-02", *where)
    assert "0 new alert(s), 3 already known; 0 case(s) opened" in plain(again.output)

    listed = plain(cli("cases", "list", "--queue", "fraud", *where).output)
    assert "customer/C1" in listed
    assert "customer/C2" not in listed
    listing = cli("cases", "list", "--queue", "fraud", *where)
    case_id = next(line.split()[1] for line in plain(listing.output).splitlines() if "C1" in line)

    refused = cli("cases", "dispose", case_id, "fraud", "--author", "ana", "--reason", "x", *where)
    assert refused.exit_code == 2
    assert "DL350" in plain(refused.output)
    steps = [
        ("status", case_id, "investigating", "--author", "ana"),
        ("assign", case_id, "bo", "--author", "ana"),
        ("comment", case_id, "card used abroad", "--author", "bo"),
        ("dispose", case_id, "fraud", "--author", "bo", "--reason", "confirmed"),
    ]
    for step in steps:
        result = cli("cases", *step, *where)
        assert result.exit_code == 0, (step, result.output)
    assert "2 event label(s)" in plain(result.output)

    shown = plain(cli("cases", "show", case_id, *where).output)
    for text in ("case.dispose", "case.assign", "card used abroad", "watch.big", "confirmed"):
        assert text in shown
    labels = plain(cli("labels", "show", "customer", "C1", *where).output)
    assert "fraud" in labels
    assert "case" in labels
    missing = cli("cases", "show", "999", *where)
    assert missing.exit_code == 2
    assert "DL400" in plain(missing.output)

    # The label events are in the source layer: the backtest counts both alerted events.
    report = cli("backtest", "--from", "2026-06-01", "--to", "2099-01-01", *where)
    assert report.exit_code == 0, report.output
    assert "2 labelled fraud" in plain(report.output)
