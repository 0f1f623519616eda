"""Open-loop HTTP load generator for the decision service; prints one JSON result line.

Run in its own process (``python -m benchmarks.loadgen --scenario decide --rate 500``) so that
client CPU never competes with the server's event loop inside one interpreter.

Schedule: request ``i`` is due at ``t0 + i / rate`` whether or not earlier ones have answered.
Each of ``--connections`` keep-alive connections claims the next due slot when it is free, so
if the server falls behind the backlog waits client-side and that wait is part of the latency,
which is measured from the *scheduled* time (corrected for coordinated omission, as in wrk2).
``--rate 0`` is closed-loop: every connection sends back to back (max throughput).

HTTP/1.1 is spoken over raw asyncio streams (a few lines, no parsing library), because on a
2-core box httpx costs more CPU per request than the service being measured. Bodies are built
before the clock starts, so generating events does not slow sending. ``--serve-trivial PORT``
runs a fixed-answer server, to measure this generator's own ceiling.

``--events FILE --offset N`` replays recorded events (JSONL, in event-time order) as they were
recorded: event id and event time kept, request ``i`` carrying the next one (or the next
``--batch-size``) from line ``N`` on, never wrapping around. Event time and wall time are
decoupled, as in a replay of history; the order is kept per connection, and across connections
up to the requests in flight. The run stops when the file is used up (closed loop) or builds no
more requests than it holds (open loop; ``replay.short`` says so); ``replay.events_sent`` says
where the next run's slice starts, so that no event is sent twice. The outcomes of the decisions
answered (``decide``, ``batch``) are counted in ``outcomes``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

PATHS = {
    "healthz": "/healthz",
    "trivial": "/",
    "events": "/v1/events",
    "decide": "/v1/decide",
    "batch": "/v1/decide/batch",
}
Body = bytes | None


class EventFactory:
    """Realistic valid events for the example project: entities come from fixed pools so that
    velocity features accumulate state; event ids are unique per run (``run_id`` prefix)."""

    def __init__(
        self,
        run_id: str,
        customers: int,
        seed: int,
        rate: float,
    ) -> None:
        self.rng = random.Random(seed)
        self.run_id = run_id
        self.customers = customers
        self.merchants = [f"m{i:05d}" for i in range(2000)]
        self.terminals = [f"t{i:05d}" for i in range(800)]
        self.mccs = ["5411", "5812", "5999", "4121", "5732", "7995", "6011"]
        self.base = time.time()
        self.step = 1.0 / rate if rate > 0 else 0.0
        self.n = 0

    def _common(self, kind: str, i: int) -> dict[str, Any]:
        self.n += 1
        when = datetime.fromtimestamp(self.base + i * self.step if self.step else time.time(), UTC)
        return {
            "event_id": f"{self.run_id}-{self.n}",
            "type": kind,
            "occurred_at": when.isoformat(),
        }

    def _party(self) -> tuple[int, str, str]:
        # 1% of customers make 20% of the traffic: some entities carry long feature histories.
        heavy = self.rng.random() < 0.2
        c = self.rng.randrange(max(self.customers // 100, 1) if heavy else self.customers)
        return c, f"cust{c:06d}", f"dev{c:06d}-{self.rng.randrange(2)}"

    def transaction(self, i: int) -> dict[str, Any]:
        r = self.rng
        c, customer, device = self._party()
        ev = self._common("transaction", i)
        channel = r.choices(
            ["card_present", "card_online", "transfer", "instant_payment", "atm"],
            [40, 25, 20, 10, 5],
        )[0]
        direction = (
            "credit" if channel in ("transfer", "instant_payment") and r.random() < 0.3 else "debit"
        )
        amount = round(min(r.lognormvariate(3.5, 1.3), 25_000.0), 2)
        ev.update(customer_id=customer, account_id=f"acc{c:06d}", amount=amount, currency="EUR")
        ev.update(channel=channel, direction=direction)
        if channel.startswith("card") or channel == "atm":
            ev.update(merchant_id=r.choice(self.merchants), mcc=r.choice(self.mccs))
            if channel != "card_online":
                ev["terminal_id"] = r.choice(self.terminals)
        else:
            ev.update(device_id=device, ip=f"10.{c % 250}.{r.randrange(250)}.{r.randrange(250)}")
            other = f"acc{r.randrange(self.customers):06d}"
            ev["counterparty_account_id"] = other
            if direction == "debit":
                ev.update(
                    payee_id=f"payee-{other}", balance_before=round(amount * r.uniform(1, 8), 2)
                )
        return ev

    def other(self, i: int) -> dict[str, Any]:
        """Non-decided traffic in a plausible mix: mostly logins and app events."""
        r = self.rng
        c, customer, device = self._party()
        kind = r.choices(
            ["login", "app_event", "device_bind", "payee_add", "profile_change", "label"],
            [45, 35, 5, 5, 5, 5],
        )[0]
        ev = self._common(kind, i)
        ip = f"10.{c % 250}.{r.randrange(250)}.{r.randrange(250)}"
        if kind == "label":
            ev.update(
                entity_type="customer", entity_id=customer, label="fraud", source="chargeback"
            )
            return ev
        ev["customer_id"] = customer
        if kind == "login":
            ev.update(device_id=device, ip=ip, success=r.random() > 0.08)
            ev["method"] = r.choice(["password", "biometric", "otp"])
        elif kind == "app_event":
            ev.update(
                device_id=device, ip=ip, action=r.choice(["view_balance", "open_card", "pay"])
            )
        elif kind == "device_bind":
            ev.update(device_id=f"dev{c:06d}-{r.randrange(9)}", ip=ip, device_model="Pixel 9")
        elif kind == "payee_add":
            ev.update(account_id=f"acc{c:06d}", payee_id=f"payee-{r.randrange(10**6)}")
        else:
            ev["field"] = r.choice(["phone", "email", "address", "password"])
        return ev

    def body(self, scenario: str, i: int, batch_size: int) -> Body:
        if scenario == "decide":
            return orjson.dumps(self.transaction(i))
        if scenario == "events":
            return orjson.dumps(self.other(i))
        if scenario == "batch":
            return orjson.dumps([self.transaction(i) for _ in range(batch_size)])
        return None


class Replay:
    """Recorded events, one JSON object a line in event-time order, sent as they are: request
    ``i`` carries line ``offset + i`` (``decide``) or the ``per`` lines from ``offset + i * per``
    (``batch``). Lines are not parsed: the bodies are the recorded bytes."""

    def __init__(self, path: Path, offset: int, per: int) -> None:
        self.lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        if not 0 <= offset <= len(self.lines):
            raise ValueError(f"--offset {offset} is outside the {len(self.lines)} events of {path}")
        self.offset = offset
        self.per = per
        self.requests = (len(self.lines) - offset) // per  # the most this run can send

    def body(self, scenario: str, i: int) -> bytes:
        at = self.offset + i * self.per
        if scenario == "batch":
            return b"[" + b",".join(self.lines[at : at + self.per]) + b"]"
        return self.lines[at]

    def summary(self, sent: int, short: bool) -> dict[str, Any]:
        """Which events the run sent: ``events_sent`` from ``first``, the next run starts after."""
        events = sent * self.per

        def occurred(at: int) -> str | None:
            return orjson.loads(self.lines[at])["occurred_at"] if events else None

        return {
            "first": self.offset,
            "events_sent": events,
            "events_available": len(self.lines) - self.offset,
            "first_occurred_at": occurred(self.offset),
            "last_occurred_at": occurred(self.offset + events - 1),
            "exhausted": sent >= self.requests,  # nothing left for this run's next request
            "short": short,  # open loop: the schedule needed more events than were left
        }


def outcomes_of(scenario: str, body: bytes) -> list[str]:
    """The top-level outcomes of a decision answer (one, or a batch's)."""
    answer = orjson.loads(body)
    if scenario == "batch":
        return [d.get("outcome", "?") for d in answer.get("decisions", ())]
    return [answer.get("outcome", "?")]


def request_bytes(path: str, body: Body) -> bytes:
    if body is None:
        return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
) -> tuple[int, bytes]:
    """Send one request, read one response (Content-Length framing); its status and body."""
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
        elif line.lower().startswith(b"transfer-encoding"):
            raise ValueError("chunked responses are not supported")
    return status, (await reader.readexactly(length) if length else b"")


class Run:
    def __init__(
        self, args: argparse.Namespace, make: Callable[[int], bytes], limit: int | None = None
    ) -> None:
        """``limit``: the most requests there are bodies for (a replay's events)."""
        self.args = args
        self.make = make
        self.open_loop = args.rate > 0
        self.total = math.ceil(args.rate * (args.warmup + args.duration)) if self.open_loop else 0
        self.max_requests = args.max_requests if limit is None else min(args.max_requests, limit)
        self.short = self.open_loop and self.total > self.max_requests
        self.total = min(self.total, self.max_requests)
        self.count_outcomes = args.scenario in ("decide", "batch")
        self.outcomes: Counter[str] = Counter()  # of every decision answered, warm-up included
        self.bodies = [make(i) for i in range(self.total)]  # prebuilt: no generation while timed
        self.next = 0
        self.t0 = 0.0
        self.lat_ms: list[float] = []
        self.timeline: list[tuple[float, float, float]] = []  # --trace: (due s, latency, lag ms)
        self.lag_ms: list[float] = []  # send time minus due time: the generator's own lateness
        self.measured = self.ok = self.completed = self.finished = 0
        self.in_window = 0  # successful answers that arrived inside the measured window
        self.errors: Counter[str] = Counter()
        self.backlog_max = 0

    def claim(self, now: float) -> tuple[int, float] | None:
        """Next slot and its due time, or None when the run is over."""
        a = self.args
        i = self.next
        if self.open_loop:
            if i >= self.total or now > self.t0 + a.warmup + a.duration + a.grace:
                return None
            due = self.t0 + i / a.rate
            self.backlog_max = max(self.backlog_max, int((now - due) * a.rate))
        else:
            if now >= self.t0 + a.warmup + a.duration or i >= self.max_requests:
                return None
            due = now
        self.next += 1
        return i, due

    def record(self, due: float, sent: float, done: float, outcome: str) -> None:
        self.finished += 1
        self.completed += outcome == "ok"
        start = self.t0 + self.args.warmup
        end = start + self.args.duration
        # Throughput counts answers by arrival time, latency counts requests by due time.
        self.in_window += outcome == "ok" and start <= done < end
        if due < start or due >= end:
            return  # warm-up, or (closed loop) past the window
        self.measured += 1
        self.lag_ms.append((sent - due) * 1000)
        if outcome == "ok":
            self.ok += 1
            self.lat_ms.append((done - due) * 1000)
            if self.args.trace is not None:
                self.timeline.append((due - start, (done - due) * 1000, (sent - due) * 1000))
        else:
            self.errors[outcome] += 1

    async def worker(self) -> None:
        a = self.args
        reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
        try:
            while (slot := self.claim(time.perf_counter())) is not None:
                i, due = slot
                if (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                req = self.bodies[i] if self.open_loop else self.make(i)
                sent = time.perf_counter()
                due = due if self.open_loop else sent  # closed loop: body generation not timed
                try:
                    status, body = await asyncio.wait_for(exchange(reader, writer, req), a.timeout)
                    outcome = "ok" if status == 200 else f"http_{status}"
                    if status == 200 and self.count_outcomes:
                        self.outcomes.update(outcomes_of(a.scenario, body))
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                    outcome = type(exc).__name__
                    writer.close()  # the stream is out of step now: reconnect
                    reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
                self.record(due, sent, time.perf_counter(), outcome)
        finally:
            writer.close()

    async def go(self) -> dict[str, Any]:
        a = self.args
        cpu0 = time.process_time()
        self.t0 = time.perf_counter() + 0.05  # connections open before the first slot is due
        tasks = [asyncio.create_task(self.worker()) for _ in range(a.connections)]
        hard_stop = a.warmup + a.duration + a.grace + a.timeout + 1
        done, pending = await asyncio.wait(tasks, timeout=hard_stop)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                self.errors[f"worker:{type(task.exception()).__name__}"] += 1
        wall = time.perf_counter() - self.t0
        unsent = max(self.total - self.next, 0) if self.open_loop else 0
        if unsent:  # slots never sent before the grace deadline count as failures
            self.errors["not_sent"] += unsent
        if self.next > self.finished:  # cut off at the hard stop, still unanswered
            self.errors["unfinished"] += self.next - self.finished
        return self.summary(wall, time.process_time() - cpu0, unsent)

    def summary(self, wall: float, cpu: float, unsent: int) -> dict[str, Any]:
        a = self.args
        lat, lags = sorted(self.lat_ms), sorted(self.lag_ms)
        achieved = self.in_window / a.duration
        per = a.batch_size if a.scenario == "batch" else 1
        return {
            "scenario": a.scenario,
            "path": PATHS[a.scenario],
            "mode": "open" if self.open_loop else "closed",
            "offered_rps": a.rate if self.open_loop else None,
            "achieved_rps": round(achieved, 1),
            "events_per_s": round(achieved * per, 1),
            "events_per_request": per,
            "connections": a.connections,
            "warmup_s": a.warmup,
            "duration_s": a.duration,
            "measured": self.measured + (unsent if self.open_loop else 0),
            "ok": self.ok,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "latency_ms": {
                "p50": pct(lat, 0.50),
                "p90": pct(lat, 0.90),
                "p99": pct(lat, 0.99),
                "p999": pct(lat, 0.999),
                "max": round(lat[-1], 3) if lat else None,
                "mean": round(sum(lat) / len(lat), 3) if lat else None,
            },
            "send_lag_ms": {"p50": pct(lags, 0.5), "p99": pct(lags, 0.99)},
            "client_backlog_max": self.backlog_max,
            "completed_total": self.completed,  # warm-up included: for CPU per request
            "sent_total": self.next,  # requests sent (open loop: the unsent are not)
            "wall_s": round(wall, 3),
            "client_cpu": round(cpu / wall, 3) if wall > 0 else None,
            **({"outcomes": dict(sorted(self.outcomes.items()))} if self.count_outcomes else {}),
        }


def pct(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)


async def serve_trivial(port: int) -> None:
    """A fixed 200 answer per request, nothing else: the floor the generator runs against."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nContent-Type: application/json\r\n\r\n"
    answer += b'{"status":"ok"}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")  # GETs only: no body to skip
                writer.write(answer)
                if b"connection: close" in head.lower():
                    break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8000, help="service port on 127.0.0.1")
    p.add_argument("--scenario", choices=sorted(PATHS), default="decide")
    p.add_argument("--rate", type=float, default=500.0, help="requests/s; 0 = closed loop")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    p.add_argument("--grace", type=float, default=2.0, help="seconds to drain a late backlog")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="closed-loop bound")
    p.add_argument("--customers", type=int, default=5000, help="size of the entity pools")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--events", type=Path, help="JSONL events to replay as recorded (decide, batch)")
    p.add_argument("--offset", type=int, default=0, help="--events: the first line to send")
    p.add_argument("--run-id", default=f"lg{time.time_ns():x}", help="event_id prefix")
    p.add_argument("--trace", type=Path, help="write every measured answer (due s, ms, lag ms)")
    p.add_argument("--serve-trivial", type=int, metavar="PORT", help="run the trivial server")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop  # same loop as the server: the cheapest scheduling Python offers

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.serve_trivial is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_trivial(args.serve_trivial))
        return
    if args.scenario == "batch" and args.batch_size < 1:
        sys.exit("--batch-size must be >= 1")
    path = PATHS[args.scenario]
    replay = None
    if args.events is not None and args.scenario in ("decide", "batch"):
        per = args.batch_size if args.scenario == "batch" else 1
        replay = Replay(args.events, args.offset, per)
    factory = EventFactory(args.run_id, args.customers, args.seed, args.rate)

    def make(i: int) -> bytes:
        if replay is not None:
            return request_bytes(path, replay.body(args.scenario, i))
        return request_bytes(path, factory.body(args.scenario, i, args.batch_size))

    run = Run(args, make, replay.requests if replay is not None else None)
    result = asyncio.run(run.go())
    if args.trace is not None:
        lines = (f"{due:.6f} {ms:.3f} {lag:.3f}\n" for due, ms, lag in run.timeline)
        args.trace.write_text("".join(lines))
    if replay is not None:
        result["replay"] = replay.summary(run.next, run.short)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
