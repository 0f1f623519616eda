"""Decisions: the outcome of one event, with its reasons and a per-stage latency trace."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Seeded once from the OS: os.urandom per decision releases the GIL on the hot path, and another
# busy thread (the loader, the case store) can then keep it for a whole switch interval (ms).
_ids = random.Random(os.urandom(16))


def new_decision_id() -> str:
    """Time-ordered and unique: 48 bits of milliseconds then 64 random bits (ULID-like, hex)."""
    return f"dec_{time.time_ns() // 1_000_000:012x}{_ids.getrandbits(64):016x}"


@dataclass(frozen=True, slots=True)
class Reason:
    """Something that fired: a rule (or, later, a model) with the values it saw."""

    kind: str  # "rule" | "threshold" | "model"
    id: str
    description: str
    outcome: str | None
    score: float
    values: dict[str, Any]
    shadow: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "description": self.description,
            "outcome": self.outcome,
            "score": self.score,
            "shadow": self.shadow,
            "values": {k: _jsonable(v) for k, v in self.values.items()},
        }


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(slots=True)
class Decision:
    decision_id: str
    event_id: str
    event_type: str
    occurred_at: datetime
    decided_at: datetime
    outcome: str
    score: float
    strategy_version: str
    reasons: list[Reason] = field(default_factory=list)
    trace_us: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at.isoformat(),
            "decided_at": self.decided_at.isoformat(),
            "outcome": self.outcome,
            "score": self.score,
            "strategy_version": self.strategy_version,
            "reasons": [r.as_dict() for r in self.reasons],
            "trace_us": {k: round(v, 1) for k, v in self.trace_us.items()},
        }
