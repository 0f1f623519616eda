"""The source layer's interface: append-only events (and their decisions), durable on ack.

Adapters: :mod:`decisionloop.storage.memory` (tests, experiments) and
:mod:`decisionloop.storage.duckdb_source` (the embedded default). A PostgreSQL adapter will be one
more class passing the same conformance suite (``tests/test_source_conformance.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Record:
    """One accepted event as received, with the decision taken on it (if any)."""

    event_id: str
    event_type: str
    occurred_at: datetime
    ingested_at: datetime
    payload: bytes  # the event's JSON exactly as accepted
    decision: bytes | None = None  # the decision's JSON
    decision_id: str | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event_id: str
    event_type: str
    occurred_at: datetime
    ingested_at: datetime
    payload: dict[str, Any]


class SourceLog(Protocol):
    def submit(self, records: Sequence[Record]) -> Future[None]:
        """Queue records for the next group commit; the future resolves once they are durable."""
        ...

    def write(self, records: Sequence[Record]) -> None:
        """Store records and make them durable in the calling thread, in one commit (the event
        loop's group commit, :mod:`decisionloop.storage.loop_commit`); raises ``StorageError``
        when they could not be stored or the log is closed."""
        ...

    def event_ids(self) -> Iterator[str]:
        """Every stored event id (to rebuild the idempotency index on start)."""
        ...

    def scan(self, since: datetime | None = None) -> Iterator[StoredEvent]:
        """Stored events with ``occurred_at >= since``, in occurred_at then ingestion order."""
        ...

    def max_occurred_at(self) -> datetime | None:
        """The latest event time stored: online state is rebuilt from a look-back before it."""
        ...

    def decision(self, decision_id: str) -> dict[str, Any] | None: ...

    def decision_for_event(self, event_id: str) -> dict[str, Any] | None: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


def append(log: SourceLog, records: Sequence[Record]) -> None:
    """Blocking append: returns once the records are durable (used by the CLI)."""
    log.submit(records).result()
