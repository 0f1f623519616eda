"""A live terminal summary of a replay: rate, outcome mix, latency, top rules."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from decisionloop.ingest.replay import ReplayStats, replay


def render(stats: ReplayStats) -> Group:
    head = Table.grid(padding=(0, 2))
    rate = stats.sent / stats.elapsed if stats.elapsed > 0 else 0.0
    head.add_row(
        f"[bold]{stats.sent}[/] events sent",
        f"[bold]{stats.decided}[/] decided",
        f"{rate:,.0f} events/s",
        f"request p50 {stats.percentile(0.5):.1f} ms  p99 {stats.percentile(0.99):.1f} ms",
        f"[red]{stats.errors} errors[/]" if stats.errors else "no errors",
    )
    outcomes = Table("outcome", "decisions", "share", title="outcome mix", min_width=40)
    for outcome, count in stats.outcomes.most_common():
        outcomes.add_row(outcome, str(count), f"{count / max(stats.decided, 1):.2%}")
    rules = Table("rule", "hits", title="top rules", min_width=40)
    for rule, count in stats.rules.most_common(8):
        rules.add_row(rule, str(count))
    return Group(head, outcomes, rules)


def replay_with_summary(
    console: Console, events: Iterable[dict[str, Any]], url: str, rate: float, batch: int
) -> ReplayStats:
    shown = [0.0]

    def show(stats: ReplayStats) -> None:
        # Rendering costs milliseconds; in the demo it shares a process with the server.
        now = time.monotonic()
        if now - shown[0] >= 0.5:
            shown[0] = now
            live.update(render(stats))

    with Live(render(ReplayStats()), console=console, refresh_per_second=2) as live:
        stats = replay(events, url, rate, batch, on_progress=show)
        live.update(render(stats))
    return stats
