"""Online state is a cache: a service restarted from the source layer decides as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decisionloop.runtime import open_service
from tests.conftest import make_settings, transaction


def stream() -> list[dict[str, Any]]:
    events = []
    for i in range(40):
        events.append(
            transaction(
                f"e{i}",
                occurred_at=f"2026-06-01T12:{i:02d}:00+00:00",
                customer_id=f"C{i % 3}",
                channel="card_online" if i % 2 else "transfer",
                merchant_id=f"M{i % 5}",
                amount=1.0 + i,
            )
        )
    return events


def features_seen(answers: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Everything a decision depends on, without its id, clock time and latency."""
    return [
        (a["event_id"], a["outcome"], a["score"], [(r["id"], r["values"]) for r in a["reasons"]])
        for a in answers
    ]


def test_restart_from_source_equals_uninterrupted(project_dir: Path, tmp_path: Path) -> None:
    events = stream()
    one = open_service(make_settings(project_dir, tmp_path / "one"))
    uninterrupted = one.handle_sync(events, "decide")
    one_state = {f.spec.name: dict(f.state) for f in one.engine.features.features}
    one.close()

    first = open_service(make_settings(project_dir, tmp_path / "two"))
    before = first.handle_sync(events[:25], "decide")
    first.close()
    second = open_service(make_settings(project_dir, tmp_path / "two"))
    after = second.handle_sync(events[25:], "decide")
    two_state = {f.spec.name: dict(f.state) for f in second.engine.features.features}
    second.close()

    assert features_seen(before + after) == features_seen(uninterrupted)
    assert two_state == one_state
    fired = [r["values"] for a in after for r in a["reasons"]]
    assert fired, "the stream must exercise features for the comparison to mean anything"
