"""Conformance suite of the operational store (labels, lists, audit) and of the lookup index.

Every adapter of :class:`decisionloop.ops.store.OpsStore` runs it: SQLite in memory and SQLite
in a file (the default); a PostgreSQL URL is one more parameter when a server is at hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from decisionloop.errors import InputError, NotFoundError
from decisionloop.ops.index import LookupIndex
from decisionloop.ops.store import OpsStore, SqlOpsStore

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpsStore]:
    opened = (
        SqlOpsStore("sqlite://")
        if request.param == "memory"
        else SqlOpsStore.at_path(tmp_path / "state" / "ops.sqlite")
    )
    yield opened
    opened.close()


def add(store: OpsStore, entity_id: str = "D1", label: str = "mule", **extra: object) -> object:
    options: dict[str, object] = {"reason": "seen in case 7", "source": "analyst", "author": "ana"}
    options.update(extra)
    options.setdefault("at", T0)
    return store.add_label("device", entity_id, label, **options)  # type: ignore[arg-type]


def test_a_label_keeps_everything_it_was_given(store: OpsStore) -> None:
    add(store, expires_at=T0 + HOUR, source_ref="case-7")
    [label] = store.labels("device", "D1")
    assert (label.entity_type, label.entity_id, label.label) == ("device", "D1", "mule")
    assert (label.reason, label.source, label.source_ref, label.author) == (
        "seen in case 7",
        "analyst",
        "case-7",
        "ana",
    )
    assert label.created_at == T0
    assert label.expires_at == T0 + HOUR
    assert label.removed is None


def test_ttl_ends_a_label_at_its_expiry(store: OpsStore) -> None:
    add(store, expires_at=T0 + HOUR)
    [label] = store.labels("device", "D1")
    assert not label.in_force(T0 - timedelta(microseconds=1))
    assert label.in_force(T0)
    assert label.in_force(T0 + HOUR - timedelta(microseconds=1))
    assert not label.in_force(T0 + HOUR)


def test_removal_keeps_the_row_and_records_who_when_why(store: OpsStore) -> None:
    add(store)
    [removed] = store.remove_label(
        "device", "D1", "mule", author="bob", reason="false positive", at=T0 + HOUR
    )
    assert removed.removed is not None
    assert (removed.removed.by, removed.removed.at, removed.removed.reason) == (
        "bob",
        T0 + HOUR,
        "false positive",
    )
    [kept] = store.labels("device", "D1")
    assert kept == removed
    assert kept.in_force(T0)
    assert not kept.in_force(T0 + HOUR)


def test_removing_a_label_that_is_not_active_is_not_found(store: OpsStore) -> None:
    with pytest.raises(NotFoundError):
        store.remove_label("device", "D1", "mule", author="bob", reason="x", at=T0)
    add(store)
    store.remove_label("device", "D1", "mule", author="bob", reason="x", at=T0 + HOUR)
    with pytest.raises(NotFoundError):
        store.remove_label("device", "D1", "mule", author="bob", reason="x", at=T0 + 2 * HOUR)


def test_labels_are_filtered_by_entity(store: OpsStore) -> None:
    add(store, "D1")
    add(store, "D2", "compromised")
    store.add_label("ip", "D1", "tor", reason="r", source="api", author="a", at=T0)
    assert [x.label for x in store.labels("device", "D2")] == ["compromised"]
    assert [x.label for x in store.labels("ip")] == ["tor"]
    assert len(store.labels()) == 3


def test_every_change_is_an_audit_record(store: OpsStore) -> None:
    add(store)
    store.remove_label("device", "D1", "mule", author="bob", reason="cleared", at=T0 + HOUR)
    store.create_list("blocked_ips", kind="ip", description="known bad", author="ana", at=T0)
    store.add_item("blocked_ips", "10.0.0.1", author="ana", reason="botnet", at=T0)
    store.remove_item("blocked_ips", "10.0.0.1", author="bob", reason="reassigned", at=T0 + HOUR)
    trail = store.audit("device/D1")
    assert [(e.action, e.actor) for e in trail] == [("label.remove", "bob"), ("label.add", "ana")]
    assert trail[0].detail["reason"] == "cleared"
    actions = [e.action for e in store.audit("blocked_ips")]
    assert actions == ["item.remove", "item.add", "list.create"]
    assert len(store.audit(limit=2)) == 2


def test_lists_items_and_their_history(store: OpsStore) -> None:
    created = store.create_list(
        "blocked_ips", kind="ip", description="known bad", author="ana", at=T0
    )
    assert store.get_list("blocked_ips") == created
    assert [x.name for x in store.lists()] == ["blocked_ips"]
    store.add_item("blocked_ips", "10.0.0.1", author="ana", reason="botnet", at=T0)
    store.remove_item("blocked_ips", "10.0.0.1", author="bob", reason="gone", at=T0 + HOUR)
    store.add_item("blocked_ips", "10.0.0.1", author="ana", reason="back", at=T0 + 2 * HOUR)
    first, second = store.items("blocked_ips")
    assert first.removed is not None
    assert first.removed.reason == "gone"
    assert second.removed is None
    assert second.reason == "back"


def test_list_errors(store: OpsStore) -> None:
    store.create_list("l", kind="ip", description="", author="a", at=T0)
    with pytest.raises(InputError):
        store.create_list("l", kind="ip", description="", author="a", at=T0)
    with pytest.raises(NotFoundError):
        store.get_list("missing")
    with pytest.raises(NotFoundError):
        store.add_item("missing", "v", author="a", reason="r", at=T0)
    with pytest.raises(NotFoundError):
        store.remove_item("l", "never-added", author="a", reason="r", at=T0)


def test_a_file_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ops.sqlite"
    first = SqlOpsStore.at_path(path)
    first.add_label("device", "D1", "mule", reason="r", source="api", author="a", at=T0)
    first.close()
    again = SqlOpsStore.at_path(path)
    assert [x.label for x in again.labels("device", "D1")] == ["mule"]
    again.close()


def test_the_index_answers_as_of_a_time(store: OpsStore) -> None:
    add(store, "D1", expires_at=T0 + 2 * HOUR)
    add(store, "D2")
    store.remove_label("device", "D2", "mule", author="b", reason="r", at=T0 + HOUR)
    store.create_list("l", kind="ip", description="", author="a", at=T0)
    store.add_item("l", "v", author="a", reason="r", at=T0 + HOUR)
    index = LookupIndex.from_store(store)
    assert not index.has_label("device", "D1", "mule", T0 - HOUR)
    assert index.has_label("device", "D1", "mule", T0 + HOUR)
    assert not index.has_label("device", "D1", "mule", T0 + 2 * HOUR)  # expired
    assert index.has_label("device", "D2", "mule", T0)
    assert not index.has_label("device", "D2", "mule", T0 + HOUR)  # removed
    assert not index.has_label("device", None, "mule", T0)
    assert not index.has_label("device", "D1", "mule", None)
    assert not index.in_list("l", "v", T0)
    assert index.in_list("l", "v", T0 + HOUR)
    assert not index.in_list("l", None, T0 + HOUR)
    assert index.labels_of("device", "D1", T0) == ["mule"]
