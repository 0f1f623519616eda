"""In-memory source log: the reference implementation of the port, and a fast test double."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import orjson

from decisionloop.storage.ports import Record, StoredEvent


class MemorySourceLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[StoredEvent] = []
        self._decisions: dict[str, dict[str, Any]] = {}
        self._by_event: dict[str, str] = {}

    def submit(self, records: Sequence[Record]) -> Future[None]:
        future: Future[None] = Future()
        self.write(records)
        future.set_result(None)
        return future

    def write(self, records: Sequence[Record]) -> None:
        with self._lock:
            for record in records:
                self._events.append(
                    StoredEvent(
                        seq=len(self._events),
                        event_id=record.event_id,
                        event_type=record.event_type,
                        occurred_at=record.occurred_at,
                        ingested_at=record.ingested_at,
                        payload=orjson.loads(record.payload),
                    )
                )
                if record.decision is not None and record.decision_id is not None:
                    self._decisions[record.decision_id] = orjson.loads(record.decision)
                    self._by_event[record.event_id] = record.decision_id

    def event_ids(self) -> Iterator[str]:
        with self._lock:
            ids = [e.event_id for e in self._events]
        yield from ids

    def scan(self, since: datetime | None = None) -> Iterator[StoredEvent]:
        with self._lock:
            events = sorted(
                (e for e in self._events if since is None or e.occurred_at >= since),
                key=lambda e: (e.occurred_at, e.seq),
            )
        yield from events

    def max_occurred_at(self) -> datetime | None:
        with self._lock:
            return max((e.occurred_at for e in self._events), default=None)

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._decisions.get(decision_id)

    def decision_for_event(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            decision_id = self._by_event.get(event_id)
            return self._decisions.get(decision_id) if decision_id else None

    def count(self) -> int:
        with self._lock:
            return len(self._events)

    def close(self) -> None:
        return None
