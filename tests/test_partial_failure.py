"""A defect deciding one event of a batch fails the request, never the durability of the others:
a retry gets their original decisions, and the failed event decides once the defect is gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from decisionloop.engine.service import DecisionService
from tests.conftest import transaction


def test_the_other_events_of_a_failed_batch_are_stored_and_answered_on_retry(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = [transaction(f"b{i}", occurred_at=f"2026-06-01T12:0{i}:00+00:00") for i in range(3)]
    decide = service.engine.decide

    def fails_on_b1(event: Any, validate_us: float = 0.0) -> Any:
        if event.event_id == "b1":
            raise RuntimeError("a defect")
        return decide(event, validate_us)

    monkeypatch.setattr(service.engine, "decide", fails_on_b1)
    with pytest.raises(RuntimeError, match="a defect"):
        asyncio.run(service.handle(batch, "decide"))
    assert service.source.count() == 2  # type: ignore[attr-defined]

    monkeypatch.setattr(service.engine, "decide", decide)
    retried = asyncio.run(service.handle(batch, "decide"))
    assert [a["event_id"] for a in retried] == ["b0", "b1", "b2"]
    assert service.metrics.duplicates.total() == 2  # b0 and b2: their original decisions
    assert service.source.count() == 3  # type: ignore[attr-defined]
    stored = {e: service.source.decision_for_event(e) for e in ("b0", "b2")}
    assert [retried[0], retried[2]] == [stored["b0"], stored["b2"]]
