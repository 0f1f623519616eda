"""The whole loop on the demo bank: replay -> cases -> dispositions -> retrain -> a better ranking.

A 500-customer, six-week demo bank (seed 11) is streamed through the HTTP API *without* its own
fraud labels: the only labels the platform gets are the ones investigators write by disposing
the cases that the example project's review and decline decisions opened (ground truth from the
bank's ``truth``: a case is fraud when one of its alerted payments is). A LightGBM model is then
trained on the first five weeks with those labels and its point-in-time features, and ranks the
sixth week's payments: its average precision against the ground truth must beat the rules' own
ranking (outcome severity, then added rule scores) on the same week.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import average_precision_score

from decisionloop.api.app import create_app
from decisionloop.demo.bank import BankConfig, generate
from decisionloop.ml.train import LightGBMEstimator
from decisionloop.ml.training import training_frame
from decisionloop.project.loader import load_project
from decisionloop.project.scaffold import init_project
from decisionloop.rules.report import strategy_scores
from decisionloop.runtime import open_service
from decisionloop.settings import load_settings

CONFIG = BankConfig(customers=500, days=42, seed=11)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("loop")
    init_project(root / "project")
    (root / "project" / "cases.yaml").write_text("alert_outcomes: [review, decline]\n")
    settings = load_settings(project_dir=root / "project", data_dir=root / "state")
    bank = generate(CONFIG)
    truth = {row["event_id"] for row in bank.truth}
    events = [e for e in bank.events if e["type"] != "label"]  # labels come from cases only
    dispositions: dict[str, int] = {"fraud": 0, "not_fraud": 0}
    with TestClient(create_app(open_service(settings), settings)) as client:
        for start in range(0, len(events), 1000):
            answer = client.post("/v1/stream", json=events[start : start + 1000])
            assert answer.status_code == 200, answer.text
        cases = client.get("/v1/cases", params={"limit": 1000}).json()["cases"]
        for case in cases:
            alerts = client.get(f"/v1/cases/{case['id']}").json()["alerts"]
            fraud = any(alert["event_id"] in truth for alert in alerts)
            disposition = "fraud" if fraud else "not_fraud"
            who = {"author": "ana", "reason": "checked with the customer"}
            moved = client.post(
                f"/v1/cases/{case['id']}/status", json={"status": "investigating", **who}
            )
            assert moved.status_code == 200, moved.text
            closed = client.post(
                f"/v1/cases/{case['id']}/disposition", json={"disposition": disposition, **who}
            )
            assert closed.status_code == 200, closed.text
            assert closed.json()["event_labels"], "a disposition writes event labels"
            dispositions[disposition] += 1
    source = settings.source_path()
    assert source is not None
    return {
        "project": root / "project",
        "source": source,
        "truth": truth,
        "dispositions": dispositions,
    }


def test_dispositions_are_the_only_labels_and_they_train_a_better_ranking(
    loop: dict[str, object],
) -> None:
    dispositions = loop["dispositions"]
    assert isinstance(dispositions, dict)
    assert dispositions["fraud"] > 0
    assert dispositions["not_fraud"] > 0
    truth = loop["truth"]
    assert isinstance(truth, set)
    project = load_project(Path(str(loop["project"])))
    start = CONFIG.start
    cut, end = start + timedelta(days=35), start + timedelta(days=42)
    with duckdb.connect(str(loop["source"]), read_only=True) as conn:
        (stored_labels,) = conn.execute(
            "SELECT count(*) FROM events WHERE event_type = 'label' AND event_id LIKE 'case-%'"
        ).fetchall()[0]
        (other_labels,) = conn.execute(
            "SELECT count(*) FROM events WHERE event_type = 'label' AND event_id NOT LIKE 'case-%'"
        ).fetchall()[0]
        train = training_frame(conn, project, "transaction", start=start, end=cut)
        test = training_frame(conn, project, "transaction", start=cut, end=end)
        rules = strategy_scores(conn, project, "transaction", cut, end)
    assert stored_labels > 0
    assert other_labels == 0
    # Every positive the model learns from is an alerted payment of a case disposed as fraud.
    assert 0 < train.positives <= stored_labels
    names = train.feature_names
    learner = LightGBMEstimator()
    model = learner.fit(
        train.frame.select(names).to_numpy().astype(np.float64),
        train.frame["target"].to_numpy().astype(np.float64),
        names,
    )
    scores = learner.predict(model, test.frame.select(names).to_numpy().astype(np.float64))
    ids = test.frame["event_id"].to_list()
    fraud = np.array([i in truth for i in ids])
    assert fraud.sum() > 0
    by_rules = {
        row["event_id"]: row["rules_severity"] + float(np.arctan(row["rules_score"]) / np.pi) + 0.5
        for row in rules.iter_rows(named=True)
    }
    rule_scores = np.array([by_rules[i] for i in ids])
    model_ap = average_precision_score(fraud, scores)
    rules_ap = average_precision_score(fraud, rule_scores)
    assert model_ap > rules_ap, (model_ap, rules_ap)
