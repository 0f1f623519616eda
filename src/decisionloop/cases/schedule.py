"""Post-event monitoring run by the service: period after period of event time, on its own thread.

A running service holds its DuckDB file, so a second process (``decisionloop monitor``) cannot
read it; the service therefore runs the monitoring rule sets itself, when ``cases.yaml`` asks::

    monitoring:
      every: 1h      # one run per hour of event time
      lag: 15m       # once the latest stored event is this far past the hour's end

Periods are aligned to ``every`` in event time (UTC), so they follow the events whether they are
live or replayed history. Each run covers ``[covered, end)``: ``covered`` is where the last
completed scheduled run ended (kept in the case store with every run, so a restart or an outage
resumes there and catches up in one run), ``end`` the latest aligned instant at least ``lag``
before the latest stored event. The first run covers the last period only (if it fails, the
retry starts where it started). A failed run is recorded with its error and retried — after one
check interval, then twice as long after each further failure, at most hourly; alerts are keyed
per rule and event, so a retried or overlapping period never opens a duplicate.
``POST /v1/monitoring/runs`` runs any period on demand through the same path.

The thread starts with the server (``decisionloop serve``, the demo), not with every command that
opens the service (an import would otherwise monitor the history it loads), and wakes every
``min(every, 60 s)`` of wall-clock time; a run reads through its own DuckDB
connection (the writer goes on) and competes with the decision path for the CPU only while it
runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from decisionloop.cases.monitor import MonitorRun, monitor, recorded_run
from decisionloop.cases.service import CaseService
from decisionloop.cases.store import MonitorRunRecord
from decisionloop.engine.metrics import LoopCounter
from decisionloop.errors import Problem, StorageError
from decisionloop.ops.store import OpsStore
from decisionloop.storage.duckdb_source import DuckDBSourceLog

log = logging.getLogger(__name__)
SCHEDULE = "schedule"
MAX_BACKOFF_S = 3600.0  # a run that keeps failing is retried at most hourly
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def period_end(latest: datetime, every: timedelta, lag: timedelta) -> datetime:
    """The latest multiple of ``every`` (since the epoch, UTC) at or before ``latest - lag``."""
    since = latest - lag - _EPOCH
    return _EPOCH + (since // every) * every


class MonitorSchedule:
    """Runs the project's monitoring rule sets over each new period of event time."""

    def __init__(
        self,
        project_dir: Path,
        source: DuckDBSourceLog,
        cases: CaseService,
        ops: OpsStore | None,
        every: timedelta | None,
        lag: timedelta,
        check_every: float | None = None,
    ) -> None:
        self.project_dir = project_dir
        self.source = source
        self.cases = cases
        self.ops = ops
        self.every = every
        self.lag = lag
        self.check_every = check_every or min((every or timedelta(minutes=1)).total_seconds(), 60)
        self.runs = LoopCounter(
            "decisionloop_monitor_runs", "Post-event monitoring runs", ("trigger", "result")
        )
        self._lock = threading.RLock()  # one run at a time: scheduled and on demand
        self._stop = threading.Event()
        self._reader: duckdb.DuckDBPyConnection | None = None  # the running run's, to interrupt
        self._thread = threading.Thread(target=self._loop, name="decisionloop-monitor", daemon=True)

    def start(self) -> None:
        """Start the scheduled runs (none without ``every``: on demand only). The server calls
        it once the service is up — never during an import, which would monitor history."""
        if self.every is not None and not self._thread.is_alive():
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new runs, interrupt the one in progress (it is recorded as failed and its
        period retried after a restart), and wait for it to end."""
        self._stop.set()
        reader = self._reader
        if reader is not None:
            reader.interrupt()
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def due(self) -> tuple[datetime, datetime] | None:
        """The period the next scheduled run covers, or None when no full period is ready."""
        latest = self.source.max_occurred_at()
        if latest is None or self.every is None:
            return None
        end = period_end(latest, self.every, self.lag)
        start = self.cases.store.schedule_start(SCHEDULE) or end - self.every
        return (start, end) if start < end else None

    def run_due(self) -> MonitorRunRecord | None:
        """One scheduled run over the period that is due, if any (recorded, errors included)."""
        with self._lock:  # the period is read and run in one step
            period = self.due()
            return None if period is None else self.run(*period, trigger=SCHEDULE)

    def run(self, start: datetime, end: datetime, trigger: str) -> MonitorRunRecord:
        """Monitor ``[start, end)`` now and record the run; a failure is recorded, then raised."""
        with self._lock:
            if self._stop.is_set():
                raise StorageError(
                    "the service is stopping", [Problem("monitoring", "no new runs; retry later")]
                )
            try:
                _, record = recorded_run(self.cases, trigger, start, end, self._monitor(start, end))
            except Exception:
                self.runs.inc(trigger, "error")
                raise
            self.runs.inc(trigger, "ok")
            return record

    def _monitor(self, start: datetime, end: datetime) -> Callable[[], MonitorRun]:
        def attempt() -> MonitorRun:
            self._reader = self.source.reader()
            try:
                reader, project_dir = self._reader, self.project_dir
                return monitor(reader, project_dir, start, end, self.cases, store=self.ops)
            finally:
                self._reader.close()
                self._reader = None

        return attempt

    def _loop(self) -> None:
        failures = 0
        while not self._stop.wait(min(self.check_every * 2**failures, MAX_BACKOFF_S)):
            try:
                self.run_due()
            except Exception:  # recorded and counted; retried later, less often each time
                failures = min(failures + 1, 16)
                log.exception("scheduled monitoring run failed (%d in a row)", failures)
            else:
                failures = 0
