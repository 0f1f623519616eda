"""The embedded source layer: one DuckDB file, one writer thread, group commit.

Requests hand their records to a queue and wait on a future. The writer drains whatever has queued
since its last commit into one transaction (an Arrow table per table, one INSERT each), commits, and
only then resolves the futures: many concurrent requests share one fsync, and an answer never
leaves before its event is on disk. Readers use their own cursors; DuckDB's MVCC isolates them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from decisionloop.errors import StorageError
from decisionloop.storage.ports import Record, StoredEvent

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT NOT NULL,            -- ingestion order
    event_id VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,  -- the time the event became available to the bank
    payload VARCHAR NOT NULL        -- JSON exactly as accepted
);
CREATE TABLE IF NOT EXISTS decisions (
    decision_id VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    outcome VARCHAR NOT NULL,
    body VARCHAR NOT NULL           -- the decision's JSON as returned to the client
);
"""
_TS = pa.timestamp("us", tz="UTC")
_STOP = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_Item = tuple[Sequence[Record], "Future[None]"]


def _from_epoch_us(micros: int) -> datetime:
    # Read instants as integers: DuckDB's TIMESTAMPTZ -> Python conversion would need pytz.
    return _EPOCH + timedelta(microseconds=micros)


class DuckDBSourceLog:
    def __init__(self, path: Path, max_group: int = 1024) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_group = max_group
        try:
            self._conn = duckdb.connect(str(path))
            self._conn.execute(SCHEMA)
            row = self._conn.execute("SELECT coalesce(max(seq) + 1, 0) FROM events").fetchone()
        except duckdb.Error as exc:
            raise StorageError(f"cannot open source layer {path}: {exc}") from exc
        self._next_seq = int(row[0]) if row else 0
        # The writer owns self._conn; readers get cursors from a separate root, one per call.
        self._reader_root = self._conn.cursor()
        self._reader_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self.commits = 0  # group commits done, for metrics
        self._writer = threading.Thread(target=self._run, name="source-writer", daemon=True)
        self._writer.start()

    # -- writing ------------------------------------------------------------------------------
    def submit(self, records: Sequence[Record]) -> Future[None]:
        future: Future[None] = Future()
        self._queue.put((records, future))
        return future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items: list[_Item] = [first]  # type: ignore[list-item]
            size = len(items[0][0])
            stop = False
            while size < self.max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                items.append(item)  # type: ignore[arg-type]
                size += len(item[0])  # type: ignore[index]
            self._commit(items)
            if stop:
                return

    def _commit(self, items: list[_Item]) -> None:
        records = [r for batch, _ in items for r in batch]
        try:
            self._write(records)
        except Exception as exc:  # resolve every waiter, never leave a request hanging
            log.exception("group commit of %d records failed", len(records))
            error = StorageError(f"could not store {len(records)} event(s): {exc}")
            for _, future in items:
                future.set_exception(error)
            return
        self.commits += 1
        for _, future in items:
            future.set_result(None)

    def _write(self, records: list[Record]) -> None:
        first_seq = self._next_seq
        events = pa.table(
            {
                "seq": pa.array(range(first_seq, first_seq + len(records)), pa.int64()),
                "event_id": [r.event_id for r in records],
                "event_type": [r.event_type for r in records],
                "occurred_at": pa.array([r.occurred_at for r in records], _TS),
                "ingested_at": pa.array([r.ingested_at for r in records], _TS),
                "payload": [r.payload.decode() for r in records],
            }
        )
        decided = [r for r in records if r.decision is not None]
        decisions = pa.table(
            {
                "decision_id": [r.decision_id for r in decided],
                "event_id": [r.event_id for r in decided],
                "event_type": [r.event_type for r in decided],
                "occurred_at": pa.array([r.occurred_at for r in decided], _TS),
                "outcome": [r.outcome for r in decided],
                "body": [r.decision.decode() for r in decided if r.decision is not None],
            }
        )
        conn = self._conn
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.register("new_events", events)
            conn.execute("INSERT INTO events SELECT * FROM new_events")
            if decided:
                conn.register("new_decisions", decisions)
                conn.execute("INSERT INTO decisions SELECT * FROM new_decisions")
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.unregister("new_events")
            conn.unregister("new_decisions")
        self._next_seq += len(records)

    # -- reading ------------------------------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._reader_lock:
            return self._reader_root.cursor()

    def event_ids(self) -> Iterator[str]:
        cursor = self._cursor()
        result = cursor.execute("SELECT event_id FROM events")
        while batch := result.fetchmany(50_000):
            for (event_id,) in batch:
                yield event_id

    def scan(self, since: datetime | None = None) -> Iterator[StoredEvent]:
        cursor = self._cursor()
        sql = (
            "SELECT seq, event_id, event_type, epoch_us(occurred_at), epoch_us(ingested_at), "
            "payload FROM events WHERE ? IS NULL OR occurred_at >= ? ORDER BY occurred_at, seq"
        )
        result = cursor.execute(sql, [since, since])
        while batch := result.fetchmany(10_000):
            for seq, event_id, event_type, occurred_us, ingested_us, payload in batch:
                yield StoredEvent(
                    seq,
                    event_id,
                    event_type,
                    _from_epoch_us(occurred_us),
                    _from_epoch_us(ingested_us),
                    orjson.loads(payload),
                )

    def max_occurred_at(self) -> datetime | None:
        row = self._cursor().execute("SELECT epoch_us(max(occurred_at)) FROM events").fetchone()
        return _from_epoch_us(row[0]) if row and row[0] is not None else None

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        return self._one("SELECT body FROM decisions WHERE decision_id = ?", decision_id)

    def decision_for_event(self, event_id: str) -> dict[str, Any] | None:
        return self._one("SELECT body FROM decisions WHERE event_id = ? LIMIT 1", event_id)

    def _one(self, sql: str, key: str) -> dict[str, Any] | None:
        row = self._cursor().execute(sql, [key]).fetchone()
        return orjson.loads(row[0]) if row else None

    def count(self) -> int:
        row = self._cursor().execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._writer.is_alive():
            self._queue.put(_STOP)
            self._writer.join()
        try:
            self._conn.execute("CHECKPOINT")
        finally:
            self._reader_root.close()
            self._conn.close()
