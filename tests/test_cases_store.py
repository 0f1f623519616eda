"""The case store and its configuration: grouping, deduplication, SLAs, the case entity."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from decisionloop.cases.config import CasesConfig, load_cases_config
from decisionloop.cases.service import CaseService
from decisionloop.cases.store import CaseFilter, NewAlert, SqlCaseStore
from decisionloop.domain.events import EventType
from decisionloop.errors import CaseTransitionError, DefinitionError, InputError, NotFoundError
from decisionloop.project.loader import load_project
from decisionloop.runtime import open_service
from tests.conftest import make_settings, transaction

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)


def alert(key: str, entity: str = "C1", queue: str = "fraud", priority: str = "medium") -> NewAlert:
    return NewAlert(
        dedup_key=key,
        source="monitor",
        event_id=key,
        event_type="transaction",
        occurred_at=T0,
        entity_type="customer",
        entity_id=entity,
        queue=queue,
        priority=priority,  # type: ignore[arg-type]
        rule_ids=("watch.big",),
    )


@pytest.fixture
def cases() -> CaseService:
    return CaseService(SqlCaseStore("sqlite://"), CasesConfig())


def event_types(project_dir: Path) -> dict[str, EventType]:
    project = load_project(project_dir)
    return {n: EventType.build(n, s, project.entities) for n, s in project.event_types.items()}


def test_alerts_group_by_entity_and_queue_and_repeats_are_skipped(cases: CaseService) -> None:
    done = cases.open_alerts(
        [alert("a"), alert("b"), alert("a"), alert("c", "C2"), alert("d", queue="aml")], at=T0
    )
    assert (len(done.alerts), done.repeats, len(done.cases_opened)) == (4, 1, 3)
    again = cases.open_alerts([alert("a"), alert("b")], at=T0)
    assert (again.alerts, again.repeats) == ([], 2)
    found = cases.list(CaseFilter(entity_id="C1"))
    assert sorted(c.queue for c in found) == ["aml", "fraud"]
    fraud = next(c for c in found if c.queue == "fraud")
    assert [a.new.event_id for a in cases.store.alerts(fraud.id)] == ["a", "b"]
    assert fraud.due_at - fraud.opened_at == timedelta(days=3)  # medium, built-in SLA


def test_concurrent_alerts_about_one_entity_open_one_case(cases: CaseService) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: cases.open_alerts([alert(f"k{i}")], at=T0), range(16)))
    (case,) = cases.list(CaseFilter())
    assert len(cases.store.alerts(case.id)) == 16


def test_transitions_are_checked(cases: CaseService) -> None:
    cases.open_alerts([alert("a")], at=T0)
    (case,) = cases.list(CaseFilter())
    with pytest.raises(CaseTransitionError) as raised:
        cases.set_status(case.id, "open", "ana")
    assert raised.value.http_status == 409
    assert "allowed: investigating" in raised.value.problems[0].reason
    with pytest.raises(CaseTransitionError):
        cases.check_disposition(case.id, "fraud", "ana", "why")
    cases.set_status(case.id, "investigating", "ana")
    assert cases.set_status(case.id, "open", "ana", "back to the queue").status == "open"
    with pytest.raises(InputError):
        cases.set_status(case.id, "finished", "ana")
    with pytest.raises(NotFoundError):
        cases.set_status(404, "investigating", "ana")
    audit = cases.store.audit(case.id)
    assert [e.action for e in audit] == ["case.open", "alert.add", "case.status", "case.status"]
    assert audit[-1].detail == {
        "from": "investigating",
        "to": "open",
        "reason": "back to the queue",
    }


def test_sla_and_case_entity_come_from_cases_yaml(project_dir: Path, tmp_path: Path) -> None:
    (project_dir / "cases.yaml").write_text(
        "default_queue: payments\n"
        "case_entity: {transaction: account}\n"
        "sla:\n  default: {medium: 2h}\n  payments: {high: 30m}\n"
        "priority_by_outcome: {review: high}\n"
    )
    settings = make_settings(project_dir, tmp_path / "state")
    service = open_service(settings)
    try:
        big = {"amount": 6000.0, "channel": "instant_payment", "occurred_at": T0.isoformat()}
        service.handle_sync(
            [
                {
                    "event_id": "p1",
                    "type": "payee_add",
                    "occurred_at": (T0 - timedelta(minutes=5)).isoformat(),
                    "customer_id": "C1",
                    "account_id": "A1",
                    "payee_id": "P1",
                },
                transaction("t1", customer_id="C1", account_id="A1", **big),
            ],
            "stream",
        )
        assert service.alerts is not None
        (case,) = service.alerts.cases.list(CaseFilter())
    finally:
        service.close()
    assert (case.entity_type, case.entity_id, case.queue) == ("account", "A1", "payments")
    assert (case.priority, case.due_at - case.opened_at) == ("high", timedelta(minutes=30))
    config = CasesConfig.model_validate({"sla": {"default": {"medium": "2h"}}})
    assert config.sla_for("any", "medium") == timedelta(hours=2)
    assert config.sla_for("any", "low") == timedelta(days=7)


def test_the_case_entity_falls_back_to_what_the_event_carries(project_dir: Path) -> None:
    types = event_types(project_dir)
    config = CasesConfig.model_validate({"case_entity": {"transaction": "device"}})
    carried = {"customer_id": "C1", "account_id": "A1", "device_id": "D1"}
    assert config.case_entity_of(types["transaction"], carried, "e1") == ("device", "D1")
    without = {"customer_id": "C1", "account_id": "A1"}
    assert config.case_entity_of(types["transaction"], without, "e1") == ("customer", "C1")
    assert CasesConfig().case_entity_of(types["label"], {}, "e9") == ("event", "e9")


def test_a_bad_cases_yaml_is_a_located_error(project_dir: Path) -> None:
    (project_dir / "cases.yaml").write_text(
        "default_queue: fraud\nsla:\n  default: {medium: soon}\nqueues: 3\n"
    )
    with pytest.raises(DefinitionError) as raised:
        load_cases_config(project_dir, event_types(project_dir))
    where = {(p.line, p.reason) for p in raised.value.problems}
    assert any(line == 3 and "window" in reason for line, reason in where), where
    assert any(line == 4 for line, _ in where), where
    (project_dir / "cases.yaml").write_text("case_entity: {transaction: planet}\n")
    with pytest.raises(DefinitionError) as raised:
        load_cases_config(project_dir, event_types(project_dir))
    assert "carry no 'planet' entity" in raised.value.problems[0].reason
