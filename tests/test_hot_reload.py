"""Hot reload: new rules between requests, none dropped; refused changes leave the old serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from decisionloop.api.app import create_app
from decisionloop.api.server import BackgroundServer
from decisionloop.rules.versions import RuleHistory, content_hash, read_rule_files
from decisionloop.runtime import open_service
from decisionloop.settings import Settings
from tests.conftest import cli, plain, transaction
from tests.test_durability import free_port

RULES = "rules/fraud.yaml"


def night_transfer(event_id: str, n: int) -> dict[str, Any]:
    """Fires night_large_transfer only (score 30 in the example); one customer per event."""
    return transaction(
        event_id,
        occurred_at="2026-06-01T02:30:00+00:00",
        channel="transfer",
        amount=1500.0,
        balance_before=9000.0,
        customer_id=f"C{n:06d}",
        account_id=f"A{n:06d}-1",
    )


def edit(project_dir: Path, old: str, new: str, path: str = RULES) -> None:
    file = project_dir / path
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new, 1))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    service = open_service(settings)
    with TestClient(create_app(service, settings)) as test_client:
        yield test_client


@dataclass
class Sent:
    sent: float
    received: float
    status: int
    body: dict[str, Any]


@pytest.mark.usefixtures("isolated")
def test_reload_under_concurrent_decisions_drops_nothing(
    project_dir: Path, settings: Settings
) -> None:
    where = ("--project", project_dir, "--data-dir", settings.data_dir)
    assert cli("rules", "publish", "--author", "ann", *where).exit_code == 0
    server = BackgroundServer(create_app(open_service(settings), settings), port=free_port())
    server.start()
    results: list[Sent] = []
    stop = threading.Event()

    def send(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            n = 0
            while not stop.is_set():
                n += 1
                sent = time.monotonic()
                event = night_transfer(f"w{worker}-{n}", worker * 100_000 + n)
                response = http.post("/v1/decide", json=event)
                results.append(Sent(sent, time.monotonic(), response.status_code, response.json()))

    workers = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    try:
        for worker in workers:
            worker.start()
        while len(results) < 100:
            time.sleep(0.01)
        edit(project_dir, "score: 30", "score: 35")
        reload_started = time.monotonic()
        published = cli("rules", "publish", "--author", "bob", "--reload", server.url, *where)
        reload_finished = time.monotonic()
        assert published.exit_code == 0, published.output
        assert "reloaded transaction: transaction@v1+v2" in plain(published.output)
        count = len(results)
        while len(results) < count + 100:
            time.sleep(0.01)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        server.stop()

    assert [r for r in results if r.status != 200] == []
    versions = {r.body["strategy_version"]: r.body["score"] for r in results}
    assert versions == {"transaction@v1+v1": 30.0, "transaction@v1+v2": 35.0}  # never mixed
    before = [r for r in results if r.received < reload_started]
    after = [r for r in results if r.sent > reload_finished]
    assert len(before) >= 100
    assert len(after) >= 50
    assert {r.body["strategy_version"] for r in before} == {"transaction@v1+v1"}
    assert {r.body["strategy_version"] for r in after} == {"transaction@v1+v2"}


def test_decisions_record_the_content_hash_until_a_version_is_published(
    client: TestClient, project_dir: Path, settings: Settings
) -> None:
    unpublished = content_hash(read_rule_files(project_dir))
    first = client.post("/v1/decide", json=night_transfer("e1", 1)).json()
    assert first["strategy_version"] == f"transaction@v1+{unpublished}"
    RuleHistory.in_data_dir(settings.data_dir).record(project_dir, "ann")
    reloaded = client.post("/v1/admin/reload")
    assert reloaded.status_code == 200
    assert reloaded.json() == {
        "status": "reloaded",
        "strategies": {"transaction": "transaction@v1+v1"},
        "previous": {"transaction": f"transaction@v1+{unpublished}"},
    }
    second = client.post("/v1/decide", json=night_transfer("e2", 2)).json()
    assert second["strategy_version"] == "transaction@v1+v1"


def test_a_broken_rules_file_is_refused_and_the_old_rules_keep_serving(
    client: TestClient, project_dir: Path
) -> None:
    before = client.post("/v1/decide", json=night_transfer("e1", 1)).json()
    edit(project_dir, "amount > 1000", "amount > 'lots'")
    edit(project_dir, "score: 30", "score: 99")
    edit(
        project_dir, "rule_sets: [fraud]", "rule_sets: [fraud, gone]", "strategies/transaction.yaml"
    )
    refused = client.post("/v1/admin/reload")
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "DL200"
    reasons = " | ".join(f"{p['where']}: {p['reason']}" for p in error["problems"])
    assert len(error["problems"]) == 2, reasons
    assert "rules/fraud.yaml" in reasons
    assert "unknown rule set 'gone'" in reasons
    after = client.post("/v1/decide", json=night_transfer("e2", 2)).json()
    assert after["strategy_version"] == before["strategy_version"]
    assert after["score"] == before["score"] == 30.0


def test_feature_state_survives_a_rules_only_reload(client: TestClient, project_dir: Path) -> None:
    """Three tiny online card payments, a reload, then a fourth: the burst rule sees all four."""

    def card_test(i: int) -> dict[str, Any]:
        event = transaction(
            f"ct{i}",
            occurred_at=f"2026-06-01T12:0{i}:00+00:00",
            channel="card_online",
            amount=1.0,
            merchant_id=f"M{i}",
        )
        return client.post("/v1/decide", json=event).json()

    for i in range(3):
        assert card_test(i)["outcome"] == "approve"
    edit(project_dir, "score: 60", "score: 70")  # card_testing_burst
    assert client.post("/v1/admin/reload").status_code == 200
    reason = card_test(3)["reasons"][0]
    assert (reason["id"], reason["score"]) == ("card_testing_burst", 70.0)
    assert reason["values"]["customer.card_online_count_10m"] == 4


def test_a_feature_change_is_refused_as_needing_a_restart(
    client: TestClient, project_dir: Path
) -> None:
    before = client.post("/v1/decide", json=night_transfer("e1", 1)).json()
    edit(project_dir, "score: 30", "score: 35")
    edit(project_dir, "windows: [24h]", "windows: [12h, 24h]", "features/velocity.yaml")
    refused = client.post("/v1/admin/reload")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "DL230"
    assert "restart" in error["message"]
    assert error["problems"] == [
        {"where": "feature payee_adds", "reason": "changed since the service started"}
    ]
    after = client.post("/v1/decide", json=night_transfer("e2", 2)).json()
    assert (after["strategy_version"], after["score"]) == (before["strategy_version"], 30.0)
