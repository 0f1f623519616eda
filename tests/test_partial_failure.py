"""A defect deciding one event of a batch fails the request, never the durability of the others:
they keep their decisions (a retry gets them back), and the failed event is stored as observed,
since the online features may have counted it already."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from decisionloop.engine.service import DecisionService
from decisionloop.errors import DuplicateEventError
from tests.conftest import transaction


def batch() -> list[dict[str, Any]]:
    return [transaction(f"b{i}", occurred_at=f"2026-06-01T12:0{i}:00+00:00") for i in range(3)]


def fail_on_b1_after(target: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``target.name`` does its work for every event, then raises for b1."""
    original = getattr(target, name)

    def then_fail(event: Any, *args: Any) -> Any:
        result = original(event, *args)
        if event.event_id == "b1":
            raise RuntimeError("a defect")
        return result

    monkeypatch.setattr(target, name, then_fail)


@pytest.mark.parametrize("where", ["features", "decision"])
def test_a_failed_event_is_stored_as_observed_and_the_others_keep_their_decisions(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "features":  # the features counted b1, then the defect
        fail_on_b1_after(service.engine.features, "observe", monkeypatch)
    else:  # b1 was decided, then the defect
        fail_on_b1_after(service.engine, "decide", monkeypatch)
    with pytest.raises(RuntimeError, match="a defect"):
        asyncio.run(service.handle(batch(), "decide"))
    monkeypatch.undo()
    assert service.source.count() == 3  # type: ignore[attr-defined]
    assert service.source.decision_for_event("b1") is None
    assert [d["event_id"] for d in service.recent] == ["b2", "b0"]  # no b1 decision shown

    b0, b1, b2 = batch()
    with pytest.raises(DuplicateEventError):  # stored without a decision: not decided twice
        asyncio.run(service.handle([b1], "decide", batch=False))
    retried = asyncio.run(service.handle([b0, b2], "decide"))
    stored = [service.source.decision_for_event(e) for e in ("b0", "b2")]
    assert retried == stored  # their original decisions
    again = asyncio.run(service.handle([{**b1, "event_id": "b1-again"}], "decide", batch=False))
    assert again[0]["event_id"] == "b1-again"
