"""The HTTP contract of labels, lists and the entity view, and the rules that read them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from decisionloop.api.app import create_app
from decisionloop.runtime import open_service
from decisionloop.settings import Settings
from tests.conftest import cli, make_settings, plain, transaction

LOOKUP_RULES = """
name: lookups
rules:
  - id: mule_device
    when: has_label(device, 'mule_suspect')
    outcome: decline
    score: 10
  - id: blocked_ip
    when: in_list('blocked_ips', ip)
    outcome: review
    score: 5
"""
LABEL = {"label": "mule_suspect", "reason": "case 7", "author": "ana", "source": "analyst"}


@pytest.fixture
def lookup_settings(project_dir: Path, tmp_path: Path) -> Settings:
    (project_dir / "rules" / "lookups.yaml").write_text(LOOKUP_RULES)
    strategy = project_dir / "strategies" / "transaction.yaml"
    strategy.write_text(
        strategy.read_text().replace("rule_sets: [fraud]", "rule_sets: [fraud, lookups]")
    )
    return make_settings(project_dir, tmp_path / "state")


@pytest.fixture
def api(lookup_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(open_service(lookup_settings), lookup_settings)) as client:
        yield client


def problems(response: Any) -> dict[str, str]:
    return {p["where"]: p["reason"] for p in response.json()["error"]["problems"]}


def fired(client: TestClient, event_id: str, **fields: Any) -> list[str]:
    response = client.post("/v1/decide", json=transaction(event_id, **fields))
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["reasons"] if r["kind"] == "rule"]


def test_label_lifecycle_changes_decisions_at_once(api: TestClient) -> None:
    assert fired(api, "e1", device_id="D1") == []
    added = api.post("/v1/entities/device/D1/labels", json=LABEL)
    assert added.status_code == 201
    assert added.json()["label"] == "mule_suspect"
    assert added.json()["source"] == "analyst"
    assert fired(api, "e2", device_id="D1") == ["mule_device"]
    assert fired(api, "e3", device_id="D2") == []
    listed = api.get("/v1/entities/device/D1/labels").json()
    assert [x["label"] for x in listed["labels"]] == ["mule_suspect"]
    removed = api.delete(
        "/v1/entities/device/D1/labels/mule_suspect", params={"author": "bob", "reason": "cleared"}
    )
    assert removed.status_code == 200
    assert removed.json()["removed"][0]["removed"]["by"] == "bob"
    assert fired(api, "e4", device_id="D1") == []
    assert api.get("/v1/entities/device/D1/labels").json()["labels"] == []
    history = api.get("/v1/entities/device/D1/labels", params={"history": "true"}).json()
    assert [x["removed"]["reason"] for x in history["labels"]] == ["cleared"]


def test_labels_survive_a_restart(lookup_settings: Settings) -> None:
    with TestClient(create_app(open_service(lookup_settings), lookup_settings)) as first:
        assert first.post("/v1/entities/device/D9/labels", json=LABEL).status_code == 201
    with TestClient(create_app(open_service(lookup_settings), lookup_settings)) as again:
        assert fired(again, "e1", device_id="D9") == ["mule_device"]


def test_label_errors(api: TestClient) -> None:
    unknown = api.post("/v1/entities/planet/P1/labels", json=LABEL)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "DL400"
    assert "no entity 'planet'" in problems(unknown)["path.type"]
    bad = api.post(
        "/v1/entities/device/D1/labels",
        json={"label": "has space", "reason": " ", "author": "a", "source": "oracle", "ttl": "9y"},
    )
    assert bad.status_code == 422
    assert set(problems(bad)) == {"body.label", "body.reason", "body.source", "body.ttl"}
    missing = api.post("/v1/entities/device/D1/labels", json={"label": "x", "extra": 1})
    assert missing.status_code == 422
    assert {"body.reason", "body.author", "body.extra"} <= set(problems(missing))
    not_json = api.post("/v1/entities/device/D1/labels", content=b"{nope")
    assert not_json.status_code == 422
    assert not_json.json()["error"]["code"] == "DL300"
    gone = api.delete("/v1/entities/device/D1/labels/never", params={"author": "a", "reason": "r"})
    assert gone.status_code == 404
    no_author = api.delete("/v1/entities/device/D1/labels/never")
    assert no_author.status_code == 422
    assert set(problems(no_author)) == {"query.author", "query.reason"}
    bad_flag = api.get("/v1/entities/device/D1/labels", params={"history": "maybe"})
    assert bad_flag.status_code == 422
    assert "query.history" in problems(bad_flag)


def test_a_label_with_a_ttl_carries_its_expiry(api: TestClient) -> None:
    added = api.post("/v1/entities/ip/10.0.0.1/labels", json={**LABEL, "ttl": "2h"}).json()
    assert added["expires_at"] is not None
    assert added["expires_at"] > added["created_at"]


def test_list_lifecycle(api: TestClient) -> None:
    created = api.post(
        "/v1/lists",
        json={"name": "blocked_ips", "kind": "ip", "description": "bad", "author": "ana"},
    )
    assert created.status_code == 201
    assert [x["name"] for x in api.get("/v1/lists").json()["lists"]] == ["blocked_ips"]
    assert fired(api, "e1", ip="10.0.0.1") == []
    item = {"value": "10.0.0.1", "reason": "botnet", "author": "ana"}
    assert api.post("/v1/lists/blocked_ips/items", json=item).status_code == 201
    assert fired(api, "e2", ip="10.0.0.1") == ["blocked_ip"]
    items = api.get("/v1/lists/blocked_ips/items").json()["items"]
    assert [x["value"] for x in items] == ["10.0.0.1"]
    removed = api.delete(
        "/v1/lists/blocked_ips/items/10.0.0.1", params={"author": "bob", "reason": "reassigned"}
    )
    assert removed.status_code == 200
    assert fired(api, "e3", ip="10.0.0.1") == []
    assert api.get("/v1/lists/blocked_ips/items").json()["items"] == []
    history = api.get("/v1/lists/blocked_ips/items", params={"history": "1"}).json()["items"]
    assert history[0]["removed"]["by"] == "bob"


def test_list_errors(api: TestClient) -> None:
    body = {"name": "l1", "kind": "ip", "author": "ana"}
    assert api.post("/v1/lists", json=body).status_code == 201
    again = api.post("/v1/lists", json=body)
    assert again.status_code == 422
    assert "already exists" in problems(again)["body.name"]
    assert api.get("/v1/lists/nope/items").status_code == 404
    item = {"value": "v", "reason": "r", "author": "a"}
    assert api.post("/v1/lists/nope/items", json=item).status_code == 404
    assert (
        api.delete("/v1/lists/l1/items/v", params={"author": "a", "reason": "r"}).status_code == 404
    )
    bad = api.post("/v1/lists/l1/items", json={"value": "", "reason": "r", "author": 3})
    assert bad.status_code == 422
    assert {"body.author"} <= set(problems(bad))
    bad_name = api.post("/v1/lists", json={"name": "no spaces", "author": "a"})
    assert bad_name.status_code == 422
    assert "body.name" in problems(bad_name)


def test_entity_view(api: TestClient) -> None:
    fired(api, "e1", customer_id="C7", amount=10.0)
    fired(api, "e2", customer_id="C7", amount=20.0)
    fired(api, "e3", customer_id="C8", amount=30.0)
    api.post("/v1/entities/customer/C7/labels", json=LABEL)
    view = api.get("/v1/entities/customer/C7")
    assert view.status_code == 200, view.text
    body = view.json()
    assert [x["label"] for x in body["labels"]] == ["mule_suspect"]
    assert [e["event_id"] for e in body["recent_events"]] == ["e2", "e1"]
    assert body["features"]
    assert all(name.startswith("customer.") for name in body["features"])
    assert api.get("/v1/entities/planet/C7").status_code == 404
    assert "query.limit" in problems(api.get("/v1/entities/customer/C7", params={"limit": "0"}))


@pytest.mark.usefixtures("isolated")
def test_cli_labels_and_lists_with_their_audit(project_dir: Path, tmp_path: Path) -> None:
    where = ["--project", project_dir, "--data-dir", tmp_path / "state"]
    added = cli("labels", "add", "device", "D1", "mule_suspect", "--author", "ana",
                "--reason", "case 7", "--ttl", "7d", *where)  # fmt: skip
    assert added.exit_code == 0, added.output
    shown = plain(cli("labels", "show", "device", "D1", *where).output)
    assert "mule_suspect" in shown
    assert "case 7" in shown
    removed = cli("labels", "remove", "device", "D1", "mule_suspect", "--author", "bob",
                  "--reason", "cleared", *where)  # fmt: skip
    assert removed.exit_code == 0, removed.output
    assert "no labels" in plain(cli("labels", "show", "device", "D1", *where).output)
    trail = plain(cli("labels", "audit", "device", "D1", *where).output)
    assert trail.index("label.remove") < trail.index("label.add")
    unknown = cli("labels", "add", "planet", "P1", "x", "--author", "a", "--reason", "r", *where)
    assert unknown.exit_code == 2
    assert "DL400" in plain(unknown.output)

    assert (
        cli("lists", "create", "blocked_ips", "--author", "ana", "--kind", "ip", *where).exit_code
        == 0
    )
    assert cli("lists", "add", "blocked_ips", "10.0.0.1", "--author", "ana", "--reason", "botnet",
               *where).exit_code == 0  # fmt: skip
    assert "10.0.0.1" in plain(cli("lists", "show", "blocked_ips", *where).output)
    assert "blocked_ips" in plain(cli("lists", "show", *where).output)
    assert cli("lists", "remove", "blocked_ips", "10.0.0.1", "--author", "bob", "--reason", "gone",
               *where).exit_code == 0  # fmt: skip
    assert "10.0.0.1" not in plain(cli("lists", "show", "blocked_ips", *where).output)
    assert "10.0.0.1" in plain(cli("lists", "show", "blocked_ips", "--history", *where).output)
    actions = plain(cli("lists", "audit", "blocked_ips", *where).output)
    assert actions.index("item.remove") < actions.index("item.add") < actions.index("list.create")


def test_rules_reloaded_hot_read_the_live_labels(api: TestClient) -> None:
    assert api.post("/v1/entities/device/D1/labels", json=LABEL).status_code == 201
    assert api.post("/v1/admin/reload").status_code == 200
    assert fired(api, "e1", device_id="D1") == ["mule_device"]
    assert api.post("/v1/entities/device/D2/labels", json=LABEL).status_code == 201
    assert fired(api, "e2", device_id="D2") == ["mule_device"]
