"""Cases over HTTP: decisions open alerts, alerts group by entity, the life cycle, its audit, the
error shapes, and a disposition's labels reaching the label-aware features and the backtest."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from decisionloop.api.app import create_app
from decisionloop.cases.disposition import label_event_id
from decisionloop.rules.report import backtest
from decisionloop.runtime import open_ops_store, open_service
from decisionloop.settings import Settings
from tests.conftest import make_settings, transaction

CASE_RULES = """
name: casework
rules:
  - id: big_amount
    when: amount >= 5000
    outcome: review
  - id: atm_watch
    description: Large cash withdrawal, for the AML team whatever the outcome
    when: channel = 'atm' and amount >= 900
    outcome: challenge
    queue: aml
  - id: crypto_mcc
    when: mcc = '6051'
    outcome: decline
    alert: true
  - id: shadow_anything
    status: shadow
    when: amount >= 1
    alert: true
"""
LABEL_FEATURES = """
features:
  - {name: fraud_events, entity: customer, aggregation: labelled_count, label: fraud,
     windows: [7d], event_types: [transaction]}
"""
FRAUD_COUNT = "customer.fraud_events_7d"
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def at(minutes: int) -> str:
    """An event time inside the service's clock: minutes after two hours ago."""
    return (BASE + timedelta(minutes=minutes)).isoformat()


def with_case_rules(project_dir: Path) -> None:
    (project_dir / "rules" / "casework.yaml").write_text(CASE_RULES)
    (project_dir / "features" / "labels.yaml").write_text(LABEL_FEATURES)
    strategy = project_dir / "strategies" / "transaction.yaml"
    strategy.write_text(
        strategy.read_text().replace("rule_sets: [fraud]", "rule_sets: [fraud, casework]")
    )


@pytest.fixture
def case_settings(project_dir: Path, tmp_path: Path) -> Settings:
    with_case_rules(project_dir)
    return make_settings(project_dir, tmp_path / "state")


@pytest.fixture
def api(case_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(open_service(case_settings), case_settings)) as client:
        yield client


def decide(client: TestClient, event_id: str, minutes: int, **fields: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/decide", json=transaction(event_id, occurred_at=at(minutes), **fields)
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def cases(client: TestClient, **query: str) -> list[dict[str, Any]]:
    response = client.get("/v1/cases", params=query)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["cases"]
    return found


def error(response: Any, status: int, code: str) -> dict[str, str]:
    """The project's error shape, with its problems by where."""
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code
    assert body["message"]
    return {p["where"]: p["reason"] for p in body["problems"]}


def test_alerts_of_one_entity_and_queue_join_one_open_case(api: TestClient) -> None:
    assert decide(api, "a0", 0)["outcome"] == "approve"  # the shadow rule's alert is ignored
    assert cases(api) == []
    assert decide(api, "a1", 1, customer_id="C1", amount=6000.0)["outcome"] == "review"
    assert decide(api, "a2", 2, customer_id="C1", amount=7000.0)["outcome"] == "review"
    assert decide(api, "a3", 3, customer_id="C2", amount=8000.0)["outcome"] == "review"
    # Not a review: the rule asks, in its own queue.
    atm = decide(api, "a4", 4, customer_id="C1", channel="atm", amount=950.0)
    assert atm["outcome"] == "challenge"

    fraud = cases(api, queue="fraud")
    assert [(c["entity_type"], c["entity_id"]) for c in fraud] == [
        ("customer", "C1"),
        ("customer", "C2"),
    ]
    (aml,) = cases(api, queue="aml")
    assert (aml["entity_id"], aml["status"], aml["priority"]) == ("C1", "open", "low")
    assert cases(api, entity_type="customer", entity_id="C2") == [fraud[1]]

    one = api.get(f"/v1/cases/{fraud[0]['id']}").json()
    assert [a["event_id"] for a in one["alerts"]] == ["a1", "a2"]
    assert {a["rule_ids"] == ["big_amount"] for a in one["alerts"]} == {True}
    assert one["alerts"][0]["decision_id"] == decide(api, "a1", 1)["decision_id"]  # a repeat
    assert [e["action"] for e in one["audit"]] == ["case.open", "alert.add", "alert.add"]


def test_a_more_urgent_alert_raises_the_case_priority_and_its_sla(api: TestClient) -> None:
    decide(api, "p1", 1, customer_id="C5", amount=6000.0)  # review: medium, 3 days by default
    (before,) = cases(api)
    decide(api, "p2", 2, customer_id="C5", mcc="6051")  # decline asks for an alert: high, 1 day
    (after,) = cases(api)
    assert after["id"] == before["id"]
    assert (before["priority"], after["priority"]) == ("medium", "high")
    opened = datetime.fromisoformat(before["opened_at"])
    assert datetime.fromisoformat(before["due_at"]) - opened == timedelta(days=3)
    assert datetime.fromisoformat(after["due_at"]) - opened == timedelta(days=1)
    audit = api.get(f"/v1/cases/{after['id']}").json()["audit"]
    actions = ["case.open", "alert.add", "case.priority", "alert.add"]
    assert [e["action"] for e in audit] == actions
    assert audit[2]["detail"]["from"] == "medium"


def test_life_cycle_with_audit_and_refused_transitions(api: TestClient) -> None:
    decide(api, "l1", 1, customer_id="C7", amount=6000.0)
    (case,) = cases(api)
    url = f"/v1/cases/{case['id']}"

    closing_open = api.post(
        f"{url}/disposition", json={"disposition": "fraud", "author": "ana", "reason": "x"}
    )
    assert "cannot go from open to closed" in error(closing_open, 409, "DL350")["body.status"]

    moved = api.post(f"{url}/status", json={"status": "investigating", "author": "ana"})
    assert moved.json()["status"] == "investigating"
    assigned = api.post(f"{url}/assign", json={"assignee": "bo", "author": "ana"})
    assert assigned.json()["assignee"] == "bo"
    assert [c["id"] for c in cases(api, assignee="bo", status="investigating")] == [case["id"]]
    assert cases(api, assignee="someone_else") == []
    added = api.post(f"{url}/comments", json={"author": "bo", "text": "called the customer"})
    assert added.status_code == 201
    closing = api.post(f"{url}/status", json={"status": "closed", "author": "bo"})
    assert "disposition" in error(closing, 409, "DL350")["body.status"]

    done = api.post(
        f"{url}/disposition",
        json={"disposition": "not_fraud", "author": "bo", "reason": "customer confirmed"},
    )
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["disposition"]) == ("closed", "not_fraud")
    for refused in (
        api.post(f"{url}/status", json={"status": "investigating", "author": "bo"}),
        api.post(f"{url}/assign", json={"assignee": "cy", "author": "bo"}),
        api.post(
            f"{url}/disposition", json={"disposition": "fraud", "author": "bo", "reason": "x"}
        ),
    ):
        error(refused, 409, "DL350")

    story = api.get(url).json()
    assert [(e["actor"], e["action"]) for e in story["audit"]] == [
        ("decisionloop", "case.open"),
        ("decisionloop", "alert.add"),
        ("ana", "case.status"),
        ("ana", "case.assign"),
        ("bo", "case.comment"),
        ("bo", "case.dispose"),
    ]
    assert story["audit"][3]["detail"] == {"from": None, "to": "bo"}
    assert story["audit"][5]["detail"]["reason"] == "customer confirmed"
    assert [c["text"] for c in story["comments"]] == ["called the customer"]
    times = [e["at"] for e in story["audit"]]
    assert times == sorted(times)

    # A new alert about the same entity opens a new case: the closed one does not change.
    decide(api, "l2", 2, customer_id="C7", amount=6000.0)
    reopened = cases(api, status="open", entity_id="C7")
    assert len(reopened) == 1
    assert reopened[0]["id"] != case["id"]


def test_error_shapes(api: TestClient) -> None:
    decide(api, "e1", 1, amount=6000.0)
    (case,) = cases(api)
    url = f"/v1/cases/{case['id']}"
    assert "no case 999" in error(api.get("/v1/cases/999"), 404, "DL400")["path.case_id"]
    error(api.post("/v1/cases/999/comments", json={"author": "a", "text": "t"}), 404, "DL400")
    assert "path.case_id" in error(api.get("/v1/cases/abc"), 422, "DL300")
    assert "query.status" in error(api.get("/v1/cases", params={"status": "done"}), 422, "DL300")
    assert "query.limit" in error(api.get("/v1/cases", params={"limit": "0"}), 422, "DL300")
    missing = error(api.post(f"{url}/comments", json={"text": "t"}), 422, "DL300")
    assert "body.author" in missing
    empty = error(api.post(f"{url}/comments", json={"author": " ", "text": "t"}), 422, "DL300")
    assert "must not be empty" in empty["body.author"]
    assert "body" in error(api.post(f"{url}/assign", content=b"{"), 422, "DL300")
    api.post(f"{url}/status", json={"status": "investigating", "author": "a"})
    bad = api.post(f"{url}/disposition", json={"disposition": "maybe", "author": "a", "reason": ""})
    problems = error(bad, 422, "DL300")
    assert "fraud, not_fraud, inconclusive" in problems["body.disposition"]
    assert "body.reason" in problems
    unknown = error(api.post(f"{url}/status", json={"status": "done", "author": "a"}), 422, "DL300")
    assert "body.status" in unknown


def test_a_fraud_disposition_labels_the_events_and_the_entity(
    api: TestClient, case_settings: Settings
) -> None:
    decide(api, "f1", 1, customer_id="C9", amount=6000.0)
    decide(api, "f2", 2, customer_id="C9", amount=6500.0)
    decide(api, "f3", 3, customer_id="C9", amount=10.0)  # no alert: not labelled
    view = api.get("/v1/entities/customer/C9").json()
    assert view["features"][FRAUD_COUNT] == 0
    (case,) = cases(api)
    url = f"/v1/cases/{case['id']}"
    api.post(f"{url}/status", json={"status": "investigating", "author": "ana"})
    done = api.post(
        f"{url}/disposition", json={"disposition": "fraud", "author": "ana", "reason": "ATO"}
    ).json()
    assert done["event_labels"] == [label_event_id(case["id"], e) for e in ("f1", "f2")]

    # The label-aware feature counts the two alerted events as fraud from now on.
    view = api.get("/v1/entities/customer/C9").json()
    assert view["features"][FRAUD_COUNT] == 2
    (label,) = view["labels"]
    assert (label["label"], label["source"], label["source_ref"]) == (
        "fraud",
        "case",
        f"case:{case['id']}",
    )
    assert "ATO" in label["reason"]
    assert label["expires_at"] is not None
    assert done["entity_label"] == label["id"]
    # ... and the rules read it at once.
    later = decide(api, "f4", 4, customer_id="C9")
    assert later["outcome"] == "approve"  # no rule reads it here; the index has it:
    assert api.app.state.service.engine.lookups.has_label(  # type: ignore[attr-defined]
        "customer", "C9", "fraud", datetime.now(UTC)
    )


def test_disposed_labels_reach_the_backtest(case_settings: Settings) -> None:
    service = open_service(case_settings)
    with TestClient(create_app(service, case_settings)) as api:
        decide(api, "b1", 1, customer_id="C1", amount=6000.0)
        decide(api, "b2", 2, customer_id="C2", amount=6000.0)
        first, second = cases(api)
        for case, disposition in ((first, "fraud"), (second, "not_fraud")):
            url = f"/v1/cases/{case['id']}"
            api.post(f"{url}/status", json={"status": "investigating", "author": "ana"})
            body = {"disposition": disposition, "author": "ana", "reason": "checked"}
            assert api.post(f"{url}/disposition", json=body).status_code == 200
    source = case_settings.source_path()
    assert source is not None
    store = open_ops_store(case_settings)
    try:
        report = backtest(
            source,
            case_settings.project_dir,
            BASE,
            datetime.now(UTC) + timedelta(minutes=5),
            store=store,
        )
    finally:
        store.close()
    row = report.filter(report["rule_id"] == "big_amount").row(0, named=True)
    assert (row["hits"], row["labelled_events"], row["true_positives"]) == (2, 1, 1)
    assert row["precision"] == pytest.approx(0.5)


def test_an_alert_store_failure_never_fails_the_decision(api: TestClient) -> None:
    service = api.app.state.service  # type: ignore[attr-defined]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk gone")

    service.alerts.cases.open_alerts = broken
    assert decide(api, "x1", 1, amount=6000.0)["outcome"] == "review"
    metrics = api.get("/metrics").text
    assert "decisionloop_case_alert_failures_total 1.0" in metrics
