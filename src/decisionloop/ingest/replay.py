"""Replay history through a running service at a chosen speed, keeping the events' order.

Events travel in ordered batches to ``/v1/stream``, which decides those whose type has a strategy
and stores the rest: one request per batch, whatever the mix of types.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from decisionloop.ingest.readers import BadLine, BlankLine, read_rows


@dataclass
class ReplayStats:
    sent: int = 0
    decided: int = 0
    requests: int = 0
    errors: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    last_error: str = ""

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms[-5000:])
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def iter_events(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    count = 0
    for rows in read_rows(path):
        for row in rows:
            if isinstance(row, BadLine | BlankLine):
                continue
            yield row
            count += 1
            if limit is not None and count >= limit:
                return


def _batches(events: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for event in events:
        batch.append(event)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def replay(
    events: Iterable[dict[str, Any]],
    url: str,
    rate: float = 0.0,
    batch_size: int = 50,
    on_progress: Callable[[ReplayStats], None] | None = None,
    timeout: float = 30.0,
) -> ReplayStats:
    """Send events in order; ``rate`` events per second (0: as fast as the service answers).

    At a set rate, batches shrink so that events leave close to their due time."""
    stats = ReplayStats()
    if rate > 0:
        batch_size = max(1, min(batch_size, int(rate / 20)))  # about 20 requests per second
    with httpx.Client(base_url=url, timeout=timeout) as client:
        for run in _batches(events, batch_size):
            if rate > 0:
                due = stats.started + stats.sent / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            sent_at = time.perf_counter()
            try:
                response = client.post("/v1/stream", json=run)
            except httpx.HTTPError as exc:
                stats.errors += 1
                stats.last_error = f"{type(exc).__name__}: {exc}"
                continue
            stats.latencies_ms.append((time.perf_counter() - sent_at) * 1000)
            stats.requests += 1
            stats.sent += len(run)
            if response.status_code != 200:
                stats.errors += 1
                stats.last_error = response.text[:300]
            else:
                for decision in response.json()["results"]:
                    if "decision_id" not in decision:
                        continue
                    stats.decided += 1
                    stats.outcomes[decision["outcome"]] += 1
                    for reason in decision["reasons"]:
                        if reason["kind"] == "rule":
                            stats.rules[reason["id"]] += 1
            if on_progress is not None:
                on_progress(stats)
    return stats
