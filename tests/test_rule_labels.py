"""Rules attach risk labels when they fire: stored with their rule and decision, read by rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from decisionloop.api.app import create_app
from decisionloop.errors import DefinitionError
from decisionloop.runtime import open_service
from tests.conftest import make_settings, transaction

RULES = """
name: labelling
rules:
  - id: night_drain
    description: Large night transfer
    when: channel = 'transfer' and amount > 1000 and hour(occurred_at) < 5
    outcome: challenge
    score: 30
    labels:
      - {entity: customer, label: night_drain_suspect, ttl: 2d}
  - id: night_drain_shadow
    status: shadow
    when: channel = 'transfer' and amount > 1000
    labels:
      - {entity: account, label: shadow_only}
  - id: repeat_after_label
    when: has_label(customer, 'night_drain_suspect')
    outcome: review
    score: 20
"""
NIGHT = {"occurred_at": "2026-06-01T02:30:00+00:00", "channel": "transfer", "amount": 1500.0}


def with_rules(project_dir: Path, rules: str) -> None:
    (project_dir / "rules" / "labelling.yaml").write_text(rules)
    strategy = project_dir / "strategies" / "transaction.yaml"
    strategy.write_text(
        strategy.read_text().replace("rule_sets: [fraud]", "rule_sets: [fraud, labelling]")
    )


def rule_ids(answer: dict[str, object]) -> list[str]:
    return [r["id"] for r in answer["reasons"] if r["kind"] == "rule"]  # type: ignore[attr-defined, index]


def test_a_firing_rule_labels_the_entity_and_later_rules_see_it(
    project_dir: Path, tmp_path: Path
) -> None:
    with_rules(project_dir, RULES)
    settings = make_settings(project_dir, tmp_path / "state")
    with TestClient(create_app(open_service(settings), settings)) as client:
        first = client.post("/v1/decide", json=transaction("n1", customer_id="C9", **NIGHT)).json()
        assert "night_drain" in rule_ids(first)
        assert "repeat_after_label" not in rule_ids(first)  # attached after this decision

        labels = client.get("/v1/entities/customer/C9/labels").json()["labels"]
        (label,) = labels
        assert label["label"] == "night_drain_suspect"
        assert label["source"] == "rule"
        assert label["source_ref"] == f"night_drain@{first['decision_id']}"
        assert label["author"] == "decisionloop"
        assert label["expires_at"] is not None
        # The shadow rule fired too, but labels nothing.
        assert client.get("/v1/entities/account/A000001-1/labels").json()["labels"] == []

        later = client.post("/v1/decide", json=transaction("n2", customer_id="C9")).json()
        assert rule_ids(later) == ["repeat_after_label"]
        other = client.post("/v1/decide", json=transaction("n3", customer_id="C10")).json()
        assert rule_ids(other) == []

        metrics = client.get("/metrics").text
        assert 'decisionloop_rule_labels_attached_total{label="night_drain_suspect"} 1.0' in (
            metrics
        )


def test_a_label_on_an_entity_the_event_does_not_carry_is_a_located_error(
    project_dir: Path, tmp_path: Path
) -> None:
    with_rules(
        project_dir,
        RULES.replace(
            "{entity: customer, label: night_drain_suspect, ttl: 2d}",
            "{entity: merchant_x, label: x}",
        ),
    )
    with pytest.raises(DefinitionError) as raised:
        open_service(make_settings(project_dir, tmp_path / "state"))
    (problem,) = raised.value.problems
    assert problem.file is not None
    assert problem.file.endswith("labelling.yaml")
    assert problem.line == 10
    assert "carry no 'merchant_x' entity" in problem.reason
