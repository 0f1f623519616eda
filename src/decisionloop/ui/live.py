"""The live page: decisions per second, outcome mix, latest decisions with reasons, top rules.

One server-rendered page at ``/`` whose ``<main>`` re-fetches the ``/ui/summary`` fragment every
second with htmx (vendored in ``static/``: no build step, no CDN, works offline). Everything shown
is computed here from the service's public state; templates only lay it out, and Jinja2's
autoescaping covers every string that came from an event.

The handlers are ``async`` on purpose: they then run on the event-loop thread that also takes the
decisions, so ``service.recent`` and the counters are never read while they are being changed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from decisionloop.engine.service import DecisionService

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

WINDOW_S = 10.0  # decisions per second are averaged over this many seconds
SPARK_S = 60  # seconds of rate history drawn as a sparkline
RECENT_ROWS = 25  # latest decisions listed
STYLED_OUTCOMES = frozenset({"approve", "challenge", "review", "decline"})


class RateMeter:
    """Decisions per second over the last ``window`` seconds, from a counter sampled on read.

    Each render records the service's running total of decisions in a one-second bucket; the
    rate is the growth of that total since the oldest bucket inside the window. The buckets also
    give a per-second history for the sparkline. Until two buckets exist (the first render after
    a start), :meth:`rate` falls back to the ``decided_at`` times of the recent decisions.
    """

    def __init__(
        self,
        window: float = WINDOW_S,
        history: int = SPARK_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.clock = clock
        self._samples: deque[tuple[float, int]] = deque()  # (time, total), one per second
        self._history: deque[tuple[int, float]] = deque(maxlen=history)  # (second, rate)
        self._history_len = history

    def sample(self, total: int) -> float:
        """Record the running total now; return the current time."""
        now = self.clock()
        second = int(now)
        samples = self._samples
        if samples and int(samples[-1][0]) == second:
            samples.pop()  # keep the latest reading of each second
            if self._history and self._history[-1][0] == second:
                self._history.pop()
        if samples and second > int(samples[-1][0]):
            before_t, before_total = samples[-1]
            per_second = max(total - before_total, 0) / max(now - before_t, 1e-6)
            for missing in range(max(int(before_t) + 1, second - self._history_len + 1), second):
                self._history.append((missing, per_second))
            self._history.append((second, per_second))
        samples.append((now, total))
        while len(samples) > 1 and samples[0][0] < now - self.window:
            samples.popleft()
        return now

    def rate(self, now: float) -> float | None:
        """Decisions per second over the window, or None when the samples span under a second."""
        if len(self._samples) < 2:
            return None
        (first_t, first_total), (last_t, last_total) = self._samples[0], self._samples[-1]
        span = max(now, last_t) - first_t
        if span < 0.9:
            return None
        return max(last_total - first_total, 0) / span

    def history(self, now: float) -> list[float | None]:
        """Decisions per second for each of the last ``history`` seconds, oldest first."""
        known = dict(self._history)
        last = int(now)
        return [known.get(s) for s in range(last - self._history_len + 1, last + 1)]


def rate_from_recent(
    recent: Iterable[Mapping[str, Any]], now: float, window: float, uptime: float, full: bool
) -> float:
    """Decisions per second from the ``decided_at`` of the latest decisions (newest first).

    ``full`` says the recent list is at its size limit, so it may hold only part of the window:
    then the rate is taken over the span it covers.
    """
    count = 0
    oldest = now
    for decision in recent:
        decided = _epoch(decision.get("decided_at"))
        if decided is None or decided < now - window:
            break
        count += 1
        oldest = decided
    else:
        if full and count:
            return count / max(now - oldest, 0.5)
    return count / max(min(window, uptime), 1.0)


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


# -- the view model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeView:
    name: str
    count: int
    share: float  # 0..1
    css: str


@dataclass(frozen=True)
class RuleView:
    id: str
    hits: int
    share: float  # hits per decision, 0..1
    bar: float  # relative to the most hit rule, 0..1
    shadow: bool
    description: str


@dataclass(frozen=True)
class ReasonView:
    kind: str
    id: str
    description: str
    outcome: str
    score: str
    shadow: bool
    values: list[tuple[str, str]]
    title: str  # the hover text: description and values in one line


@dataclass(frozen=True)
class DecisionView:
    decision_id: str
    event_id: str
    event_type: str
    decided: str  # HH:MM:SS (UTC)
    occurred: str
    outcome: str
    css: str
    score: str
    latency_us: float
    latency: str
    trace: str
    reasons: list[ReasonView]


@dataclass(frozen=True)
class LiveView:
    rate: float
    rate_label: str
    spark: list[float | None]  # bar heights 0..1, None where no sample was taken
    spark_peak: str
    decisions: int
    events_stored: int
    uptime: str
    updated: str
    latency_p50: str
    latency_p99: str
    latency_n: int
    outcomes: list[OutcomeView]
    rules: list[RuleView]
    recent: list[DecisionView]
    versions: list[str] = field(default_factory=list)


def decisions_per_second(
    service: DecisionService, meter: RateMeter, summary: Mapping[str, Any]
) -> tuple[float, float]:
    """Sample the service's decision total; return (now, decisions per second)."""
    now = meter.sample(sum(summary["outcomes"].values()))
    rate = meter.rate(now)
    if rate is None:
        recent = service.recent
        rate = rate_from_recent(
            recent,
            now,
            meter.window,
            uptime=float(summary["uptime_s"]),
            full=recent.maxlen is not None and len(recent) >= recent.maxlen,
        )
    return now, rate


def build_view(service: DecisionService, meter: RateMeter) -> LiveView:
    summary = service.summary()
    counts: dict[str, int] = dict(summary["outcomes"])
    total = sum(counts.values())
    now, rate = decisions_per_second(service, meter, summary)
    history = meter.history(now)
    peak = max((r for r in history if r is not None), default=0.0)
    spark = [None if r is None else (r / peak if peak > 0 else 0.0) for r in history]
    latencies = sorted(_latency_us(d) for d in service.recent)

    strategies = list(service.engine.strategies.values())
    order: list[str] = []
    for strategy in strategies:
        order.extend(o for o in strategy.spec.outcomes if o not in order)
    order.extend(o for o in counts if o not in order)
    outcomes = []
    for name in order:
        n = counts.get(name, 0)
        outcomes.append(OutcomeView(name, n, n / total if total else 0.0, _css(name)))

    rules_known = {r.spec.id: r for s in strategies for r in s.rules}
    top: list[tuple[str, int]] = list(summary["top_rules"])
    most = max((hits for _, hits in top), default=0)
    rules = []
    for rule_id, hits in top:
        known = rules_known.get(rule_id)
        rules.append(
            RuleView(
                id=rule_id,
                hits=hits,
                share=hits / total if total else 0.0,
                bar=hits / most if most else 0.0,
                shadow=known.shadow if known is not None else False,
                description=known.spec.description if known is not None else "",
            )
        )

    return LiveView(
        rate=rate,
        rate_label=_rate(rate),
        spark=spark,
        spark_peak=_rate(peak),
        decisions=total,
        events_stored=int(summary["events_stored"]),
        uptime=_duration(float(summary["uptime_s"])),
        updated=time.strftime("%H:%M:%S", time.gmtime(now)),
        latency_p50=_micros(_percentile(latencies, 0.5)),
        latency_p99=_micros(_percentile(latencies, 0.99)),
        latency_n=len(latencies),
        outcomes=outcomes,
        rules=rules,
        recent=[_decision(d) for d in list(summary["recent"])[:RECENT_ROWS]],
        versions=[s.version for s in strategies],
    )


def _decision(d: Mapping[str, Any]) -> DecisionView:
    trace = d.get("trace_us") or {}
    latency = _latency_us(d)
    outcome = str(d.get("outcome", ""))
    return DecisionView(
        decision_id=str(d.get("decision_id", "")),
        event_id=str(d.get("event_id", "")),
        event_type=str(d.get("event_type", "")),
        decided=_clock(d.get("decided_at")),
        occurred=str(d.get("occurred_at", "")),
        outcome=outcome,
        css=_css(outcome),
        score=_number(d.get("score", 0)),
        latency_us=latency,
        latency=_micros(latency),
        trace=" · ".join(f"{stage} {_micros(float(us))}" for stage, us in trace.items()),
        reasons=[_reason(r) for r in d.get("reasons") or []],
    )


def _reason(r: Mapping[str, Any]) -> ReasonView:
    values = [(str(k), _value(v)) for k, v in (r.get("values") or {}).items()]
    description = str(r.get("description", ""))
    seen = ", ".join(f"{k} = {v}" for k, v in values)
    shadow = bool(r.get("shadow", False))
    title = description + (" (shadow: recorded, not acted on)" if shadow else "")
    return ReasonView(
        kind=str(r.get("kind", "rule")),
        id=str(r.get("id", "")),
        description=description,
        outcome=str(r.get("outcome") or ""),
        score=_number(r.get("score", 0)),
        shadow=shadow,
        values=values,
        title=f"{title}\n{seen}" if seen else title,
    )


def _latency_us(d: Mapping[str, Any]) -> float:
    trace = d.get("trace_us") or {}
    return float(sum(v for v in trace.values() if isinstance(v, int | float)))


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _css(outcome: str) -> str:
    return outcome if outcome in STYLED_OUTCOMES else "other"


def _rate(per_second: float) -> str:
    if per_second >= 100:
        return f"{per_second:,.0f}"
    return f"{per_second:,.1f}"


def _micros(us: float | None) -> str:
    if us is None:
        return "\N{EM DASH}"
    if us < 1000:
        return f"{us:,.0f} µs"
    return f"{us / 1000:,.2f} ms"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    return str(value)


def _clock(value: Any) -> str:
    epoch = _epoch(value)
    return "" if epoch is None else time.strftime("%H:%M:%S", time.gmtime(epoch))


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


# -- routes ---------------------------------------------------------------------------------------


def mount_live_page(app: FastAPI, service: DecisionService) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    meter = RateMeter()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def live(request: Request) -> Any:
        return templates.TemplateResponse(request, "live.html", {"v": build_view(service, meter)})

    @app.get("/ui/summary", response_class=HTMLResponse, include_in_schema=False)
    async def summary_fragment(request: Request) -> Any:
        return templates.TemplateResponse(
            request,
            "_summary.html",
            {"v": build_view(service, meter)},
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/v1/summary", tags=["operations"])
    async def summary() -> Any:
        """Totals, decisions per second, outcome mix, top rules and the latest decisions."""
        found = service.summary()
        _, rate = decisions_per_second(service, meter, found)
        return {**found, "decisions_per_second": round(rate, 2)}
