"""Every source-layer adapter passes the same suite (memory and DuckDB today)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from decisionloop.storage.duckdb_source import DuckDBSourceLog
from decisionloop.storage.memory import MemorySourceLog
from decisionloop.storage.ports import Record, SourceLog, append

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def record(i: int, minutes: int, decided: bool = False) -> Record:
    payload = orjson.dumps({"event_id": f"e{i}", "type": "t", "n": i})
    decision = orjson.dumps({"decision_id": f"d{i}", "event_id": f"e{i}"}) if decided else None
    return Record(
        event_id=f"e{i}",
        event_type="t",
        occurred_at=T0 + timedelta(minutes=minutes),
        ingested_at=T0 + timedelta(days=1, seconds=i),
        payload=payload,
        decision=decision,
        decision_id=f"d{i}" if decided else None,
        outcome="approve" if decided else None,
    )


Factory = Callable[[Path], SourceLog]
FACTORIES: dict[str, Factory] = {
    "memory": lambda path: MemorySourceLog(),
    "duckdb": lambda path: DuckDBSourceLog(path / "source.duckdb"),
}


@pytest.fixture(params=sorted(FACTORIES))
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SourceLog]:
    source = FACTORIES[request.param](tmp_path)
    yield source
    source.close()


def test_append_then_read_back_exactly(log: SourceLog) -> None:
    append(log, [record(1, 5, decided=True), record(2, 1)])
    assert log.count() == 2
    assert sorted(log.event_ids()) == ["e1", "e2"]
    stored = list(log.scan())
    assert [s.event_id for s in stored] == ["e2", "e1"]  # by occurred_at
    assert stored[1].payload == {"event_id": "e1", "type": "t", "n": 1}
    assert stored[1].occurred_at == T0 + timedelta(minutes=5)
    assert stored[1].ingested_at == T0 + timedelta(days=1, seconds=1)
    assert log.decision("d1") == {"decision_id": "d1", "event_id": "e1"}
    assert log.decision_for_event("e1") == {"decision_id": "d1", "event_id": "e1"}
    assert log.decision_for_event("e2") is None
    assert log.decision("nope") is None


def test_scan_since_and_ties_keep_ingestion_order(log: SourceLog) -> None:
    # e0..e2 share one instant (10 min); e3..e5 are at 3, 4 and 5 min.
    append(log, [record(i, 10 if i < 3 else i) for i in range(6)])
    since = [s.event_id for s in log.scan(since=T0 + timedelta(minutes=4))]
    assert since == ["e4", "e5", "e0", "e1", "e2"]
    assert log.max_occurred_at() == T0 + timedelta(minutes=10)


def test_empty_log(log: SourceLog) -> None:
    assert log.count() == 0
    assert list(log.scan()) == []
    assert log.max_occurred_at() is None


def test_concurrent_submits_all_land(log: SourceLog) -> None:
    futures = [log.submit([record(i, i)]) for i in range(300)]
    for future in futures:
        future.result(timeout=30)
    assert log.count() == 300
    assert len(set(log.event_ids())) == 300


def test_duckdb_survives_reopen(tmp_path: Path) -> None:
    first = DuckDBSourceLog(tmp_path / "s.duckdb")
    append(first, [record(1, 1, decided=True)])
    first.close()
    second = DuckDBSourceLog(tmp_path / "s.duckdb")
    append(second, [record(2, 2)])
    assert [s.seq for s in second.scan()] == [0, 1]  # sequence continues after a restart
    assert second.decision("d1") is not None
    second.close()


def test_write_is_durable_when_it_returns_and_shares_the_sequence(log: SourceLog) -> None:
    log.write([record(1, 1, decided=True), record(2, 2)])
    append(log, [record(3, 3)])  # the writer thread's path continues the same sequence
    log.write([record(4, 4)])
    assert [s.event_id for s in log.scan()] == ["e1", "e2", "e3", "e4"]
    assert [s.seq for s in log.scan()] == [0, 1, 2, 3]
    assert log.decision_for_event("e1") == {"decision_id": "d1", "event_id": "e1"}
