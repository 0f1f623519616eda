"""The HTTP contract: happy paths, every error class, idempotency, stored decisions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
from fastapi.testclient import TestClient

from decisionloop.settings import Settings
from tests.conftest import transaction

NIGHT_TRANSFER = {
    "occurred_at": "2026-06-01T02:30:00+00:00",
    "channel": "transfer",
    "amount": 1500.0,
    "balance_before": 9000.0,
}


def problems(response: Any) -> dict[str, str]:
    return {p["where"]: p["reason"] for p in response.json()["error"]["problems"]}


def test_decide_returns_an_explained_decision(client: TestClient) -> None:
    response = client.post("/v1/decide", json=transaction("e1", **NIGHT_TRANSFER))
    assert response.status_code == 200
    decision = response.json()
    assert decision["event_id"] == "e1"
    assert decision["decision_id"].startswith("dec_")
    assert decision["outcome"] == "challenge"
    assert decision["score"] == 30.0
    assert decision["strategy_version"].startswith("transaction@v1+")
    [reason] = decision["reasons"]
    assert reason["id"] == "night_large_transfer"
    assert reason["values"]["amount"] == 1500.0
    assert reason["values"]["occurred_at"] == "2026-06-01T02:30:00+00:00"
    assert set(decision["trace_us"]) == {"validate", "features", "rules", "combine"}


def test_quiet_transaction_is_approved_with_no_reasons(client: TestClient) -> None:
    decision = client.post("/v1/decide", json=transaction("e1")).json()
    assert decision["outcome"] == "approve"
    assert decision["reasons"] == []


def test_features_accumulate_across_events(client: TestClient) -> None:
    """Four tiny online card payments at four merchants: the fourth is a card-testing burst."""
    outcomes = []
    for i in range(4):
        event = transaction(
            f"ct{i}",
            occurred_at=f"2026-06-01T12:0{i}:00+00:00",
            channel="card_online",
            amount=1.0,
            merchant_id=f"M{i}",
        )
        outcomes.append(client.post("/v1/decide", json=event).json())
    assert [d["outcome"] for d in outcomes] == ["approve", "approve", "approve", "decline"]
    reason, threshold = outcomes[-1]["reasons"]
    assert reason["id"] == "card_testing_burst"
    assert threshold == {**threshold, "kind": "threshold", "outcome": "review", "score": 60.0}
    assert reason["values"]["customer.card_online_count_10m"] == 4
    assert reason["values"]["customer.distinct_merchants_1h"] == 4


def test_shadow_rule_is_recorded_but_never_changes_the_outcome(client: TestClient) -> None:
    for i in range(2):
        login = {
            "event_id": f"l{i}",
            "type": "login",
            "occurred_at": "2026-06-01T11:50:00+00:00",
            "customer_id": "C000001",
            "device_id": "D1",
            "ip": "10.0.0.1",
            "success": False,
            "method": "password",
        }
        assert client.post("/v1/events", json=login).json()["status"] == "accepted"
    decision = client.post("/v1/decide", json=transaction("e1")).json()
    assert decision["outcome"] == "approve"
    [reason] = decision["reasons"]
    assert reason["id"] == "failed_logins_then_payment"
    assert reason["shadow"] is True
    assert reason["values"]["customer.failed_logins_1h"] == 2


def test_scores_add_up_to_a_threshold(client: TestClient) -> None:
    """An instant night payment to a new payee: 30 + 40 >= 50 maps to review."""
    client.post(
        "/v1/events",
        json={
            "event_id": "p1",
            "type": "payee_add",
            "occurred_at": "2026-06-01T02:00:00+00:00",
            "customer_id": "C000001",
            "account_id": "A000001-1",
            "payee_id": "P1",
        },
    )
    event = transaction("e1", **{**NIGHT_TRANSFER, "channel": "instant_payment", "amount": 2500})
    decision = client.post("/v1/decide", json=event).json()
    assert decision["outcome"] == "review"
    assert decision["score"] == 70.0
    ids = [r["id"] for r in decision["reasons"]]
    assert ids == ["night_large_transfer", "new_payee_large_instant", "score>=review"]


def test_batch_decides_in_order(client: TestClient) -> None:
    events = [transaction(f"b{i}", amount=float(i + 1)) for i in range(5)]
    events[2].update(NIGHT_TRANSFER)
    response = client.post("/v1/decide/batch", json=events)
    assert response.status_code == 200
    decisions = response.json()["decisions"]
    assert [d["event_id"] for d in decisions] == [f"b{i}" for i in range(5)]
    assert [d["outcome"] for d in decisions] == ["approve"] * 2 + ["challenge"] + ["approve"] * 2


def test_get_decision_returns_the_stored_decision(client: TestClient) -> None:
    decision = client.post("/v1/decide", json=transaction("e1")).json()
    fetched = client.get(f"/v1/decisions/{decision['decision_id']}")
    assert fetched.status_code == 200
    assert fetched.json() == decision


def test_unknown_decision_is_404(client: TestClient) -> None:
    response = client.get("/v1/decisions/dec_nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "DL400"


# -- errors ---------------------------------------------------------------------------------


def test_every_bad_field_is_listed_with_its_path(client: TestClient) -> None:
    event = transaction("e1", amount="12", channel="pigeon", occurred_at="2026-06-01T12:00:00")
    del event["currency"]
    event["amout"] = 3
    response = client.post("/v1/decide", json=event)
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "DL310"
    assert body["message"] == "event is invalid"
    assert problems(response) == {
        "body.amount": "expected number, got string",
        "body.channel": "'pigeon' is not one of: card_present, card_online, transfer, "
        "instant_payment, atm",
        "body.occurred_at": "'2026-06-01T12:00:00' has no timezone; add Z or an offset "
        "such as +01:00",
        "body.currency": "field required",
        "body.amout": "unknown field for event type 'transaction'; did you mean 'amount'?",
    }


def test_unknown_type_suggests_the_closest(client: TestClient) -> None:
    response = client.post("/v1/decide", json={**transaction("e1"), "type": "transactoin"})
    assert response.status_code == 422
    assert problems(response)["body.type"].startswith(
        "unknown event type 'transactoin'; did you mean 'transaction'?"
    )


def test_wrong_json_types_and_nulls(client: TestClient) -> None:
    event = transaction("e1", customer_id=None, amount=True, balance_before=None)
    event["event_id"] = 17
    response = client.post("/v1/decide", json=event)
    assert problems(response) == {
        "body.event_id": "expected string, got number",
        "body.customer_id": "field required, got null",
        "body.amount": "expected number, got boolean",
    }


def test_batch_errors_name_the_item(client: TestClient) -> None:
    events = [transaction("b0"), transaction("b1", amount=-5), transaction("b2", direction="up")]
    response = client.post("/v1/decide/batch", json=events)
    assert response.status_code == 422
    assert problems(response) == {
        "body[1].amount": "must be >= 0",
        "body[2].direction": "'up' is not one of: debit, credit",
    }
    # All or nothing: the valid item was not decided either.
    assert client.post("/v1/decide", json=transaction("b0")).json()["event_id"] == "b0"
    assert client.get("/healthz").json()["events"] == 1


def test_malformed_json_and_wrong_shapes(client: TestClient) -> None:
    response = client.post("/v1/decide", content=b'{"event_id": ')
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "DL300"
    assert client.post("/v1/decide", json=[1, 2]).status_code == 422
    response = client.post("/v1/decide/batch", json={"not": "a list"})
    assert problems(response) == {"body": "not an array"}


def test_oversized_body_is_413(client: TestClient, settings: Settings) -> None:
    response = client.post("/v1/decide", content=b" " * (settings.max_body_bytes + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "DL320"
    too_many = [transaction(f"b{i}") for i in range(settings.max_batch_events + 1)]
    assert client.post("/v1/decide/batch", json=too_many).status_code == 413


def test_errors_are_counted_in_metrics(client: TestClient) -> None:
    client.post("/v1/decide", json={"type": "nope"})
    text = client.get("/metrics").text
    assert 'decisionloop_rejected_requests_total{code="DL310"} 1.0' in text


def test_decide_refuses_a_type_no_strategy_decides(client: TestClient) -> None:
    login = {
        "event_id": "l1",
        "type": "login",
        "occurred_at": "2026-06-01T11:50:00+00:00",
        "customer_id": "C000001",
        "device_id": "D1",
        "ip": "10.0.0.1",
        "success": True,
        "method": "biometric",
    }
    response = client.post("/v1/decide", json=login)
    assert response.status_code == 422
    assert problems(response) == {
        "body.type": "no strategy decides 'login' events; store them with POST /v1/events "
        "or declare a strategy for them"
    }
    mixed = [login, transaction("t1", **NIGHT_TRANSFER), login]
    results = client.post("/v1/stream", json=mixed).json()["results"]
    assert results[0] == {"event_id": "l1", "status": "accepted"}
    assert results[1]["outcome"] == "challenge"
    assert results[2] == {"event_id": "l1", "status": "duplicate"}


# -- idempotency ----------------------------------------------------------------------------


def test_repeat_returns_the_original_decision_and_is_stored_once(
    client: TestClient, settings: Settings
) -> None:
    first = client.post("/v1/decide", json=transaction("e1", **NIGHT_TRANSFER)).json()
    again = client.post("/v1/decide", json=transaction("e1", **NIGHT_TRANSFER)).json()
    in_batch = client.post("/v1/decide/batch", json=[transaction("e1"), transaction("e2")]).json()
    assert again == first
    assert in_batch["decisions"][0] == first
    metrics = client.get("/metrics").text
    assert 'decisionloop_events_ingested_total{event_type="transaction"} 2.0' in metrics
    assert "decisionloop_duplicate_events_total 2.0" in metrics
    client.app.state.service.source.flush()  # the loader moves journaled records in batches
    # Same process, same configuration: DuckDB shares the open database with this connection.
    with duckdb.connect(str(settings.source_path())) as db:
        assert db.execute(
            "SELECT event_id, count(*) FROM events GROUP BY 1 ORDER BY 1"
        ).fetchall() == [
            ("e1", 1),
            ("e2", 1),
        ]
        assert db.execute("SELECT count(*) FROM decisions").fetchone() == (2,)


def test_concurrent_repeats_get_one_decision(client: TestClient) -> None:
    event = transaction("same", **NIGHT_TRANSFER)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/decide", json=event).json(), range(16)))
    assert len({a["decision_id"] for a in answers}) == 1
    assert client.get("/healthz").json()["events"] == 1


def test_repeat_of_an_ingested_event_is_a_conflict(client: TestClient) -> None:
    assert client.post("/v1/events", json=transaction("e1")).json()["status"] == "accepted"
    assert client.post("/v1/events", json=transaction("e1")).json()["status"] == "duplicate"
    response = client.post("/v1/decide", json=transaction("e1"))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "DL340"


def test_events_endpoint_takes_a_list(client: TestClient) -> None:
    response = client.post(
        "/v1/events", json=[transaction("a"), transaction("b"), transaction("a")]
    )
    assert [r["status"] for r in response.json()["results"]] == [
        "accepted",
        "accepted",
        "duplicate",
    ]


# -- operations -----------------------------------------------------------------------------


def test_health_metrics_and_openapi(client: TestClient) -> None:
    client.post("/v1/decide", json=transaction("e1", **NIGHT_TRANSFER))
    assert client.get("/healthz").json()["status"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'decisionloop_decisions_total{event_type="transaction",outcome="challenge"} 1.0' in (
        metrics.text
    )
    assert 'decisionloop_rule_hits_total{rule="night_large_transfer",shadow="false"} 1.0' in (
        metrics.text
    )
    spec = client.get("/openapi.json").json()
    schemas = spec["paths"]["/v1/decide"]["post"]["requestBody"]["content"]["application/json"]
    titles = {s["title"] for s in schemas["schema"]["oneOf"]}
    assert {"transaction", "login", "label"} <= titles
    assert client.get("/docs").status_code == 200


def test_event_endpoints_are_documented_and_post_only(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/decide", "/v1/decide/batch", "/v1/events", "/v1/stream"):
        post = spec["paths"][path]["post"]
        assert post["requestBody"]["required"] is True
        assert post["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
        answer = client.get(path)
        assert answer.status_code == 405
        assert answer.headers["allow"] == "POST"
    assert "Error" in spec["components"]["schemas"]


def test_an_event_dated_in_the_future_is_refused(client: TestClient) -> None:
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    answer = client.post("/v1/decide", json=transaction("future-1", occurred_at=ahead))
    assert answer.status_code == 422
    (problem,) = answer.json()["error"]["problems"]
    assert problem["where"] == "body.occurred_at"
    assert "ahead of the service clock" in problem["reason"]
    assert "max_future_skew_s" in problem["reason"]
    # A little ahead (clocks differ) is accepted.
    near = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    assert (
        client.post("/v1/decide", json=transaction("future-2", occurred_at=near)).status_code == 200
    )


def test_an_unexpected_failure_answers_500_with_the_error_shape(
    client: TestClient, monkeypatch: Any
) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service, "handle", broken)
    answer = client.post("/v1/decide", json=transaction("boom-1"))
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["code"] == "DL000"
    assert error["problems"] == [{"where": "/v1/decide", "reason": "RuntimeError; see the log"}]
    metrics = client.get("/metrics").text
    assert 'decisionloop_rejected_requests_total{code="DL000"} 1.0' in metrics
