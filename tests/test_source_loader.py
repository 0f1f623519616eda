"""The DuckDB loader hands DuckDB the journal's own lines and lets it parse them: whatever text an
event or a decision carries, what is loaded (live or recovered after a crash) is what was
accepted, byte for byte once decoded."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decisionloop.errors import StorageError
from decisionloop.storage.duckdb_source import DuckDBSourceLog
from decisionloop.storage.journal import Journal, encode
from decisionloop.storage.ports import Record

T0 = datetime(2026, 6, 1, tzinfo=UTC)
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # any valid str
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
events = st.lists(
    st.tuples(st.dictionaries(text, values, max_size=4), st.booleans(), st.integers(0, 10**6)),
    min_size=1,
    max_size=6,
)


def records(drawn: list[tuple[dict[str, Any], bool, int]]) -> list[Record]:
    out = []
    for i, (fields, decided, seconds) in enumerate(drawn):
        payload = orjson.dumps({**fields, "event_id": f"é{i}\"'\\"})
        decision = orjson.dumps({"decision_id": f"d{i}", "fields": fields}) if decided else None
        out.append(
            Record(
                event_id=f"é{i}\"'\\",
                event_type="t\u2028",
                occurred_at=T0 + timedelta(seconds=seconds, microseconds=i),
                ingested_at=T0 + timedelta(days=1, microseconds=i),
                payload=payload,
                decision=decision,
                decision_id=f"d{i}" if decided else None,
                outcome="approve" if decided else None,
            )
        )
    return out


def assert_loaded(log: DuckDBSourceLog, written: list[Record]) -> None:
    stored = sorted(log.scan(), key=lambda s: s.seq)
    assert [s.seq for s in stored] == list(range(len(written)))
    for s, r in zip(stored, written, strict=True):
        assert (s.event_id, s.event_type) == (r.event_id, r.event_type)
        assert (s.occurred_at, s.ingested_at) == (r.occurred_at, r.ingested_at)
        assert s.payload == orjson.loads(r.payload)
    for r in written:
        expected = orjson.loads(r.decision) if r.decision is not None else None
        assert log.decision_for_event(r.event_id) == expected
        if r.decision_id is not None:
            assert log.decision(r.decision_id) == expected


@settings(max_examples=25, deadline=None)
@given(events)
def test_live_loads_keep_every_value(drawn: list[tuple[dict[str, Any], bool, int]]) -> None:
    written = records(drawn)
    with tempfile.TemporaryDirectory() as folder:
        log = DuckDBSourceLog(Path(folder) / "s.duckdb", load_interval=3600)
        try:
            log.write(written[:1])
            log.write(written[1:])
            log.flush()
            assert log.loads == 1
            with log._lock:  # nothing is left for the decision reads from memory
                assert not log._pending_decisions
                assert not log._pending_by_event
            assert_loaded(log, written)
        finally:
            log.close()


@settings(max_examples=25, deadline=None)
@given(events)
def test_recovery_loads_keep_every_value(drawn: list[tuple[dict[str, Any], bool, int]]) -> None:
    """A crash after the fsync, before any load: the journal alone is loaded on start."""
    written = records(drawn)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.duckdb"
        DuckDBSourceLog(path).close()  # the tables exist, nothing loaded
        log = DuckDBSourceLog.__new__(DuckDBSourceLog)  # only to build the journal's rows
        log._next_seq = 0
        journal = Journal(path.parent / f"{path.name}.journal")
        rows = [log._row(r) for r in written]
        journal.append([encode(row) for row in rows], rows[-1][0])
        journal.close()
        recovered = DuckDBSourceLog(path)
        try:
            assert_loaded(recovered, written)
        finally:
            recovered.close()


def test_a_failed_load_is_retried_by_the_loader_and_loads_once(tmp_path: Path) -> None:
    log = DuckDBSourceLog(tmp_path / "s.duckdb", load_interval=0.05)
    original, failures = log._insert, []

    def fail_once(batch: Any) -> None:
        if not failures:
            failures.append(batch.last_seq)
            raise RuntimeError("disk hiccup")
        original(batch)

    log._insert = fail_once  # type: ignore[method-assign]
    try:
        written = records([({"n": 1}, True, 1), ({"n": 2}, False, 2)])
        log.write(written)
        deadline = time.monotonic() + 10
        while log.loads == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # the loader thread's own retry: nothing here flushes
        assert failures
        assert log.loads == 1
        assert log._loader.is_alive()
        cursor = log._cursor()
        assert cursor.execute("SELECT count(*) FROM events").fetchone() == (2,)
        assert cursor.execute("SELECT count(*) FROM decisions").fetchone() == (1,)
        assert_loaded(log, written)
    finally:
        log.close()


def test_a_closed_log_refuses_writes_instead_of_acknowledging_them(tmp_path: Path) -> None:
    log = DuckDBSourceLog(tmp_path / "s.duckdb")
    log.write(records([({}, False, 1)]))
    log.close()
    with pytest.raises(StorageError, match="closed"):
        log.write(records([({}, False, 2)]))
    with pytest.raises(StorageError, match="closed"):
        log.submit(records([({}, False, 3)])).result(timeout=5)
