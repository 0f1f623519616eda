"""Bulk import: a file (with an optional column mapping) into the source layer, in-process.

Good rows are stored; each bad row is reported with its number and reason. Imports are idempotent
on event_id, so a file can be imported again after fixing its bad rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from decisionloop.domain.events import Event
from decisionloop.engine.service import DecisionService, future_dated
from decisionloop.errors import Problem
from decisionloop.ingest.mapping import ColumnMapping
from decisionloop.ingest.readers import BadLine, BlankLine, read_rows


@dataclass
class ImportReport:
    rows: int = 0
    stored: int = 0
    duplicates: int = 0
    bad_rows: list[Problem] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return len({p.where.split(".")[0] for p in self.bad_rows})


def import_file(
    service: DecisionService,
    path: Path,
    mapping: ColumnMapping | None,
    progress: Callable[[int], None] | None = None,
    chunk: int = 5000,
) -> ImportReport:
    report = ImportReport()
    pending = []
    for rows in read_rows(path, chunk):
        events: list[Event] = []
        horizon = datetime.now(UTC) + service.max_future_skew
        first = report.rows + 1
        for number, row in enumerate(rows, start=first):
            if isinstance(row, BlankLine):
                continue
            if isinstance(row, BadLine):
                report.bad_rows.append(Problem(f"row {number}", row.reason))
                continue
            if mapping is not None:
                result = mapping.convert_row(number, row)
                report.bad_rows.extend(result.problems)
                converted = result.events
            else:
                event, problems = service.engine.catalog.parse(row, f"row {number}")
                report.bad_rows.extend(problems)
                converted = [] if event is None else [event]
            for event in converted:
                if event.occurred_at > horizon:
                    where = f"row {number}.occurred_at"
                    report.bad_rows.append(future_dated(event, where, service.max_future_skew))
                else:
                    events.append(event)
        report.rows += len(rows)
        future, fresh = service.ingest_valid(events)
        pending.append(future)
        report.stored += fresh
        report.duplicates += len(events) - fresh
        if progress:
            progress(len(rows))
    for future in pending:
        future.result()
    return report
