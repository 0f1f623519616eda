"""The decision service: validation, idempotency, the engine and the durable source layer.

API, CLI and UI are thin layers over this class. The hot path runs on one thread (the server's
event loop), so online state needs no locks; the requests of one loop turn are made durable by one
group commit in that thread (:mod:`decisionloop.storage.loop_commit`) before any of them answers.

Idempotency: every stored ``event_id`` is indexed in memory (rebuilt from the source layer on
start). A repeat returns the original decision; a repeat that arrives while the original is still
being committed waits for the original's answer.

An unexpected failure deciding one event fails its request, but the request's events are still
made durable first: the others with their decisions (a retry gets those back), the failed one as
observed without a decision, since the online features may have counted it already (a retry of
it is refused as already stored; a new event_id decides it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import orjson

from decisionloop.cases.alerts import AlertHook
from decisionloop.cases.store import NewAlert
from decisionloop.domain.decisions import Decision
from decisionloop.domain.events import Event
from decisionloop.engine.engine import DecisionEngine
from decisionloop.engine.metrics import ServiceMetrics
from decisionloop.errors import (
    DecisionLoopError,
    DuplicateEventError,
    EventValidationError,
    NotFoundError,
    Problem,
    RestartRequiredError,
)
from decisionloop.ops.labels import LabelService, NewLabel
from decisionloop.ops.store import OpsStore
from decisionloop.project.definitions import RuleSpec
from decisionloop.storage.loop_commit import LoopGroupCommit
from decisionloop.storage.ports import Record, SourceLog

if TYPE_CHECKING:
    from decisionloop.cases.schedule import MonitorSchedule

log = logging.getLogger(__name__)
Answer = dict[str, Any]
# decide: every event gets a decision; ingest: store only; stream: decide what has a strategy.
Mode = Literal["decide", "ingest", "stream"]


@dataclass
class Prepared:
    """One event's way through the service: a new decision to store, or an earlier answer."""

    event: Event
    answer: Answer | None = None  # set for new decisions
    record: Record | None = None
    earlier: Awaitable[Answer] | None = None  # a repeat of an event still in flight
    stored: bool = False  # a repeat of an event already stored
    decide: bool = True
    labels: list[tuple[str, str, NewLabel]] | None = None  # rule-attached: entity type, id, label
    alert: NewAlert | None = None  # a case alert, stored once the decision is durable


class DecisionService:
    def __init__(
        self,
        engine: DecisionEngine,
        source: SourceLog,
        recent: int = 200,
        max_future_skew: timedelta = timedelta(minutes=5),
    ) -> None:
        self.engine = engine
        self.max_future_skew = max_future_skew
        self.source = source
        self._group_commit = LoopGroupCommit(source)
        self.metrics = ServiceMetrics()
        self.recent: deque[Answer] = deque(maxlen=recent)
        self.started_at = time.time()
        self._known: set[str] = set()
        self._inflight: dict[str, asyncio.Future[Answer]] = {}
        self.ops: OpsStore | None = None  # labels and lists; opened by the runtime
        self.alerts: AlertHook | None = None  # case alerts (docs/cases.md); set by the runtime
        self.monitoring: MonitorSchedule | None = None  # post-event monitoring; by the runtime
        self._reloading = asyncio.Lock()  # one reload at a time: the last compiled wins
        self._labelling: dict[str, dict[str, RuleSpec]] = {}  # strategy version -> its rules

    # -- start --------------------------------------------------------------------------------
    def start(self, progress: Callable[[int], None] | None = None) -> dict[str, int]:
        """Index stored event ids and rebuild online state from the source layer's look-back."""
        self._known = set(self.source.event_ids())
        latest = None
        horizon = timedelta(seconds=self.engine.horizon_seconds)
        replayed = skipped = 0
        latest_stored = self.source.max_occurred_at()
        since = latest_stored - horizon if latest_stored is not None else None
        for stored in self.source.scan(since=since):
            try:
                event = self.engine.catalog.validate(stored.payload)
            except EventValidationError:
                skipped += 1
                self.metrics.rebuild_skipped.inc()
                continue
            self.engine.observe(event)
            latest = stored.occurred_at
            replayed += 1
            if progress and replayed % 10_000 == 0:
                progress(replayed)
        self.metrics.entities.set(self.engine.features.entities())
        log.info("rebuilt online state from %d events (latest %s)", replayed, latest)
        return {"events": len(self._known), "replayed": replayed, "skipped": skipped}

    # -- the hot path -------------------------------------------------------------------------
    def validate_many(self, objs: Sequence[Any], batch: bool, mode: Mode) -> list[Event]:
        events: list[Event] = []
        problems: list[Problem] = []
        parse = self.engine.catalog.parse
        strategies = self.engine.strategies
        horizon = datetime.now(UTC) + self.max_future_skew
        for i, obj in enumerate(objs):
            path = f"body[{i}]" if batch else "body"
            event, found = parse(obj, path)
            if event is None:
                problems.extend(found)
            elif event.occurred_at > horizon:
                problems.append(future_dated(event, f"{path}.occurred_at", self.max_future_skew))
            elif mode == "decide" and event.type not in strategies:
                reason = (
                    f"no strategy decides {event.type!r} events; store them with POST /v1/events"
                    " or declare a strategy for them"
                )
                problems.append(Problem(f"{path}.type", reason))
            else:
                events.append(event)
        if problems:
            message = f"{len(problems)} problem(s) in the batch" if batch else "event is invalid"
            raise EventValidationError(message, problems)
        return events

    def prepare(self, event: Event, validate_us: float, decide: bool) -> Prepared:
        """Decide (or observe) one event unless it is a repeat. Runs on the event-loop thread."""
        earlier = self._inflight.get(event.event_id)
        if earlier is not None:
            self.metrics.duplicates.inc()
            return Prepared(event, earlier=earlier)
        if event.event_id in self._known:
            self.metrics.duplicates.inc()
            return Prepared(event, stored=True)
        now = datetime.now(UTC)
        if not decide:
            self.engine.observe(event)
            record = Record(
                event.event_id, event.type, event.occurred_at, now, orjson.dumps(event.raw)
            )
            return Prepared(
                event, answer={"event_id": event.event_id, "status": "accepted"}, record=record
            )
        decision = self.engine.decide(event, validate_us)
        answer = decision.as_dict()
        record = Record(
            event.event_id,
            event.type,
            event.occurred_at,
            now,
            orjson.dumps(event.raw),
            decision=orjson.dumps(answer),
            decision_id=decision.decision_id,
            outcome=decision.outcome,
        )
        labels = self._labels_to_attach(event, decision) if decision.reasons else None
        alert = self.alerts.alert_for(event, decision, self.engine) if self.alerts else None
        self._observe_decision(decision, answer)  # last: a decision that failed is not shown
        return Prepared(event, answer=answer, record=record, labels=labels, alert=alert)

    def _labels_to_attach(
        self, event: Event, decision: Decision
    ) -> list[tuple[str, str, NewLabel]] | None:
        """The risk labels the decision's firing (not shadow) rules attach to its entities."""
        strategy = self.engine.strategies[event.type]
        by_id = self._labelling.get(strategy.version)
        if by_id is None:
            by_id = {r.spec.id: r.spec for r in strategy.rules if r.spec.labels and not r.shadow}
            self._labelling[strategy.version] = by_id
        keys = self.engine.catalog.types[event.type].entity_keys
        found: list[tuple[str, str, NewLabel]] = []
        for reason in decision.reasons:
            rule = by_id.get(reason.id) if reason.kind == "rule" and not reason.shadow else None
            if rule is None:
                continue
            for attach in rule.labels:
                entity_id = event.get(keys[attach.entity])
                if entity_id is None:
                    continue
                why = rule.description or f"rule {rule.id} fired"
                new = NewLabel(
                    attach.label,
                    reason=f"{why} (event {event.event_id})",
                    author="decisionloop",
                    source="rule",
                    source_ref=f"{reason.id}@{decision.decision_id}",
                    ttl=attach.ttl,
                )
                found.append((attach.entity, str(entity_id), new))
        return found or None

    async def _attach_labels(self, prepared: Sequence[Prepared]) -> None:
        """After the decisions are durable: store (committed) then index each rule label, so
        the next decisions see it. A failure is logged and counted; the decision stands."""
        if self.ops is None:
            return
        entity_types = {e for t in self.engine.catalog.types.values() for e in t.entity_keys}
        labels = LabelService(self.ops, self.engine.lookups, entity_types)
        for p in prepared:
            for entity_type, entity_id, new in p.labels or ():
                try:
                    await labels.add_async(entity_type, entity_id, new)
                except Exception:
                    log.exception("attaching %s to %s %s failed", new.label, entity_type, entity_id)
                    self.metrics.label_failures.inc()
                else:
                    self.metrics.labels_attached.inc(new.label)

    def _observe_decision(self, decision: Decision, answer: Answer) -> None:
        metrics = self.metrics
        metrics.decisions.inc(decision.event_type, decision.outcome)
        observe = metrics.latency.observe
        for stage, micros in decision.trace_us.items():
            observe(stage, micros / 1e6)
        for reason in decision.reasons:
            if reason.kind == "rule":
                metrics.rule_hits.inc(reason.id, "true" if reason.shadow else "false")
        self.recent.appendleft(answer)

    async def handle(self, objs: Sequence[Any], mode: Mode, batch: bool = True) -> list[Answer]:
        """Validate all, decide or store each, make the new ones durable together, answer in
        order. ``stream`` decides the events whose type has a strategy and stores the rest."""
        started = time.perf_counter()
        events = self.validate_many(objs, batch, mode)
        validate_us = (time.perf_counter() - started) * 1e6 / max(len(events), 1)
        loop = asyncio.get_running_loop()
        prepared: list[Prepared] = []
        strategies = self.engine.strategies
        failed: Exception | None = None
        for event in events:
            decide = mode == "decide" or (mode == "stream" and event.type in strategies)
            try:
                item = self.prepare(event, validate_us, decide)
            except Exception as exc:  # a defect: this event fails, the others are still stored
                log.exception("deciding event %s failed", event.event_id)
                failed = failed or exc
                # The features ran first and may have counted it: stored as observed, without a
                # decision, the source layer (what a restart rebuilds state from) agrees with
                # the state the request's other decisions saw.
                raw = orjson.dumps(event.raw)
                now = datetime.now(UTC)
                stored = Record(event.event_id, event.type, event.occurred_at, now, raw)
                accepted = {"event_id": event.event_id, "status": "accepted"}
                item = Prepared(event, answer=accepted, record=stored)
            if item.record is not None:
                self._known.add(event.event_id)
                self._inflight[event.event_id] = loop.create_future()
            item.decide = decide
            prepared.append(item)
        records = [p.record for p in prepared if p.record is not None]
        if records:
            persist_started = time.perf_counter()
            # The flush settles which events are stored (even for a request cancelled while it
            # waits: its records are written all the same), so repeats see the truth.
            await self._group_commit.commit(records, partial(self._settle, prepared, records))
            # Kept out of the decision body so that a repeat returns it byte for byte.
            self.metrics.latency.observe("persist", time.perf_counter() - persist_started)
        if any(p.labels for p in prepared):
            await self._attach_labels(prepared)
        if self.alerts is not None:  # after durability, like labels; never fails the request
            await self.alerts.store([p.alert for p in prepared if p.alert is not None])
        if failed is not None:
            raise failed
        return [await self._answer(p) for p in prepared]

    async def _answer(self, p: Prepared) -> Answer:
        event_id = p.event.event_id
        if p.answer is not None:
            return p.answer
        if not p.decide:
            return {"event_id": event_id, "status": "duplicate"}
        if p.earlier is not None:
            return self._as_repeat(await p.earlier, event_id)
        stored = await asyncio.to_thread(self.source.decision_for_event, event_id)
        return self._as_repeat(stored, event_id)

    def _as_repeat(self, original: Answer | None, event_id: str) -> Answer:
        if original is None or "decision_id" not in original:
            raise DuplicateEventError(
                "event already ingested without a decision",
                [
                    Problem(
                        "body.event_id",
                        f"{event_id!r} was stored by /v1/events; send a new event_id to decide",
                    )
                ],
            )
        return original

    def _settle(
        self,
        prepared: Sequence[Prepared],
        records: Sequence[Record],
        error: BaseException | None,
    ) -> None:
        """Once the commit is done: stored events answer their repeats with the original answer;
        if it failed, they are forgotten (a retry is a new attempt) and their repeats get the
        error."""
        if error is None:
            self._count_stored(records)
        for p in prepared:
            if p.record is None or p.answer is None:  # a repeat: the original owns the entry
                continue
            event_id = p.event.event_id
            future = self._inflight.pop(event_id)
            if error is None:
                future.set_result(p.answer)
            else:
                self._known.discard(event_id)
                future.set_exception(error)
                future.exception()  # mark retrieved: the waiter (if any) gets it too

    def _count_stored(self, records: Sequence[Record]) -> None:
        inc = self.metrics.events.inc
        for record in records:
            inc(record.event_type)

    # -- hot reload ---------------------------------------------------------------------------
    async def reload(self, compile_engine: Callable[[], DecisionEngine]) -> dict[str, Any]:
        """Compile the project again in a worker thread, then swap in its strategies.

        The swap is one assignment on the event-loop thread. A request validates and decides in
        one synchronous step, so it runs wholly on the rules it started with (in-flight requests
        only await durability) and the next one runs on the new. Online feature state is kept:
        a change to what it was built from (entities, event types, features) is refused with
        :class:`RestartRequiredError`, since a restart rebuilds it. A compile error raises before
        the swap, so the running rules stay untouched.
        """
        async with self._reloading:
            fresh = await asyncio.to_thread(compile_engine)
            changed = _state_changes(self.engine, fresh)
            if changed:
                raise RestartRequiredError(
                    "online state was built from other definitions; restart the service to "
                    "apply this change",
                    changed,
                )
            running = self.engine
            previous = {name: s.version for name, s in running.strategies.items()}
            running.strategies = fresh.strategies
            running.fingerprint = fresh.fingerprint
        current = {name: s.version for name, s in fresh.strategies.items()}
        return {"status": "reloaded", "strategies": current, "previous": previous}

    # -- synchronous use (CLI, tests, in-process replay) --------------------------------------
    def handle_sync(self, objs: Sequence[Any], mode: Mode) -> list[Answer]:
        return asyncio.run(self.handle(objs, mode, batch=True))

    def ingest_valid(self, events: Sequence[Event]) -> tuple[Future[None], int]:
        """Bulk path for the importer: observe and store validated events not seen before."""
        now = datetime.now(UTC)
        fresh: list[Event] = []
        for event in events:
            if event.event_id in self._known:
                continue
            self._known.add(event.event_id)
            self.engine.observe(event)
            fresh.append(event)
        self.metrics.duplicates.inc(amount=len(events) - len(fresh))
        records = [
            Record(e.event_id, e.type, e.occurred_at, now, orjson.dumps(e.raw)) for e in fresh
        ]
        self._count_stored(records)
        return self.source.submit(records), len(records)

    # -- reads --------------------------------------------------------------------------------
    async def decision(self, decision_id: str) -> Answer:
        """A decision by id: recent ones from memory (on the event loop that writes them), the
        rest from the source layer in a worker thread."""
        for answer in self.recent:
            if answer["decision_id"] == decision_id:
                return answer
        found = await asyncio.to_thread(self.source.decision, decision_id)
        if found is None:
            raise NotFoundError(
                "decision not found", [Problem("path.decision_id", f"no decision {decision_id!r}")]
            )
        return found

    @property
    def events_stored(self) -> int:
        return len(self._known)

    def summary(self) -> dict[str, Any]:  # call on the event loop: it reads live counters
        """What the live page shows: totals, outcome mix, top rules, latest decisions."""
        outcomes: Counter[str] = Counter()
        for (_, outcome), n in self.metrics.decisions.values.items():
            outcomes[outcome] += n
        rule_hits: Counter[str] = Counter()
        for (rule, _), n in self.metrics.rule_hits.values.items():
            rule_hits[rule] += n
        return {
            "uptime_s": round(time.time() - self.started_at, 1),
            "events_stored": self.events_stored,
            "outcomes": dict(outcomes),
            "top_rules": rule_hits.most_common(10),
            "recent": list(self.recent)[:25],
        }

    def close(self) -> None:
        if self.monitoring is not None:  # before the source it reads
            self.monitoring.close()
        self.source.close()
        if self.ops is not None:
            self.ops.close()


def _state_changes(running: DecisionEngine, fresh: DecisionEngine) -> list[Problem]:
    """What online state depends on and differs between two engines, one problem each."""

    def features(engine: DecisionEngine) -> dict[str, Any]:
        return {f.spec.name: (f.spec, f.key_field) for f in engine.features.features}

    def event_types(engine: DecisionEngine) -> dict[str, Any]:
        return {n: (t.fields, t.entity_keys) for n, t in engine.catalog.types.items()}

    def derived(engine: DecisionEngine) -> dict[str, Any]:  # computed by the running features
        return {d.name: d.spec for d in engine.features.derived}

    problems: list[Problem] = []
    shapes = (("feature", features), ("derived feature", derived), ("event type", event_types))
    for kind, shape in shapes:
        old, new = shape(running), shape(fresh)
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                state = "added" if name not in old else "removed" if name not in new else "changed"
                problems.append(Problem(f"{kind} {name}", f"{state} since the service started"))
    if running.features.lateness != fresh.features.lateness:
        problems.append(Problem("features", "allowed lateness changed"))
    return problems


def future_dated(event: Event, where: str, skew: timedelta) -> Problem:
    ahead = event.occurred_at - datetime.now(UTC)
    return Problem(
        where,
        f"{event.occurred_at.isoformat()} is {ahead.total_seconds():.0f} s ahead of the service "
        f"clock; at most {skew.total_seconds():.0f} s is allowed (setting max_future_skew_s)",
    )


def error_answer(error: DecisionLoopError) -> Answer:
    return {"error": error.as_dict()}
