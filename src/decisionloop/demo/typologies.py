"""Simulation primitives shared by the demo bank modules, and the injected fraud.

Times are int64 microseconds since ``BankConfig.start``; money is int64 cents (exact sums, so
``balance_before`` replays without float drift). Entities are integer indices until the bank turns
them into wire ids at assembly time.

Each typology draws its number of cases as Binomial(population, declared rate), floored at one so
that even a tiny demo shows every pattern, and records one ground-truth row per fraudulent
transaction (``typ`` >= 0, with the time its label reaches the bank in ``label_at``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from decisionloop.demo.population import Population

Arr = npt.NDArray[Any]
Rng = np.random.Generator

US = 1_000_000
SEC = US
MIN = 60 * US
HOUR = 3600 * US
DAY = 24 * HOUR
MISSING = -(2**62)  # "absent" for money columns, where -1 is a legitimate value

CHANNELS = ("card_present", "card_online", "transfer", "instant_payment", "atm")
CP, CO, TR, IP, ATM = range(5)
DIRECTIONS = ("debit", "credit")
DEBIT, CREDIT = 0, 1
TYPOLOGIES = ("account_takeover", "card_testing", "compromised_terminal", "money_mule", "app_scam")
ATO, CT, TERM, MULE, APP = range(5)
SOURCES = ("chargeback", "customer_report", "investigation", "interbank_report")
CHARGEBACK, CUSTOMER_REPORT, INVESTIGATION, INTERBANK = range(4)

# Ledger columns, all int64; -1 means "none" for index columns; typ/label_* are ground truth.
_MONEY_COLS = ("t", "cust", "acct", "cents", "channel", "direction", "device", "ip", "merchant")
TX_COLS = (*_MONEY_COLS, "terminal", "mcc", "payee", "cpty", "typ", "label_at", "label_src")
_TX_DEFAULTS = {"typ": -1, "label_at": MISSING, "label_src": -1}


@dataclass(frozen=True)
class FraudRates:
    """Declared rates; tests compare them with what the generated bank actually contains."""

    account_takeover: float = 0.01  # share of customers whose online banking is taken over
    card_testing: float = 0.02  # share of customers whose card is tested by fraudsters
    compromised_terminal: float = 0.02  # share of POS terminals fitted with a skimmer
    skim_share: float = 0.3  # share of card_present payments skimmed at such a terminal
    money_mule: float = 0.006  # share of customers acting as money mules
    app_scam: float = 0.01  # share of customers tricked into an authorised push payment

    def declared(self) -> dict[str, float]:
        return asdict(self)


class Ledger:
    """Columnar transactions, appended in parts and consolidated on demand."""

    def __init__(self) -> None:
        self._parts: list[dict[str, Arr]] = []

    def add(self, **cols: Arr | int) -> None:
        sizes = [np.size(v) for v in cols.values() if np.ndim(v) > 0]
        n = max(sizes) if sizes else 1
        part = {}
        for name in TX_COLS:
            value = cols.get(name, _TX_DEFAULTS.get(name, -1))
            part[name] = np.broadcast_to(np.asarray(value, dtype=np.int64), (n,)).copy()
        self._parts.append(part)

    def add_rows(self, rows: list[dict[str, int]]) -> None:
        if rows:
            self.add(
                **{c: np.array([r.get(c, _TX_DEFAULTS.get(c, -1)) for r in rows]) for c in TX_COLS}
            )

    def frame(self) -> dict[str, Arr]:
        if len(self._parts) != 1:
            cols = {c: np.concatenate([p[c] for p in self._parts]) for c in TX_COLS}
            self._parts = [cols]
        return self._parts[0]

    def keep(self, mask: Arr) -> None:
        self._parts = [{c: v[mask] for c, v in self.frame().items()}]


def balances_before(frame: dict[str, Arr], opening: Arr) -> tuple[Arr, Arr]:
    """Balance of each row's account just before the row, and each account's closing balance."""
    acct, signed = frame["acct"], np.where(frame["direction"] == DEBIT, -1, 1) * frame["cents"]
    order = np.lexsort((np.arange(len(acct)), frame["t"], acct))
    csum = np.cumsum(signed[order])
    group_start = np.searchsorted(acct[order], acct[order], side="left")
    prior = csum - signed[order] - np.where(group_start > 0, csum[group_start - 1], 0)
    before = np.empty_like(prior)
    before[order] = opening[acct[order]] + prior
    closing = opening + np.bincount(acct, weights=signed, minlength=len(opening)).astype(np.int64)
    return before, closing


class BalanceIndex:
    """Point-in-time balance lookups over the legitimate ledger (fraud sizes its theft on it)."""

    def __init__(self, frame: dict[str, Arr], opening: Arr) -> None:
        before, _ = balances_before(frame, opening)
        signed = np.where(frame["direction"] == DEBIT, -1, 1) * frame["cents"]
        order = np.lexsort((np.arange(len(signed)), frame["t"], frame["acct"]))
        self._acct, self._t = frame["acct"][order], frame["t"][order]
        self._after, self._opening = (before + signed)[order], opening

    def at(self, acct: int, t: int) -> int:
        """The balance after every row of ``acct`` strictly before ``t``."""
        lo, hi = np.searchsorted(self._acct, [acct, acct + 1])
        i = int(lo + np.searchsorted(self._t[lo:hi], t, side="left")) - 1
        return int(self._after[i]) if i >= lo else int(self._opening[acct])


class EventLog:
    """Non-transaction events: bulk column batches plus rows appended one at a time."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, Arr, dict[str, Arr]]] = []
        self._rows: dict[str, list[tuple[int, dict[str, Any]]]] = {}

    def add_batch(self, kind: str, t: Arr, **cols: Arr | str | bool) -> None:
        """Columns are arrays (ids as int indices) or one wire value repeated for every row."""
        n = len(t)
        full = {
            k: v if isinstance(v, np.ndarray) else np.full(n, v, object) for k, v in cols.items()
        }
        self.batches.append((kind, np.asarray(t, dtype=np.int64), full))

    def add(self, kind: str, t: int, **fields: Any) -> None:
        self._rows.setdefault(kind, []).append((int(t), fields))

    def flush(self, index_fields: frozenset[str]) -> list[tuple[str, Arr, dict[str, Arr]]]:
        """All batches; single rows become batches (index fields -1 / others None when absent)."""
        out = list(self.batches)
        for kind, rows in self._rows.items():
            names = list(dict.fromkeys(n for _, f in rows for n in f))
            cols: dict[str, Arr] = {}
            for n in names:
                if n in index_fields:
                    cols[n] = np.array([f.get(n, -1) for _, f in rows], dtype=np.int64)
                else:
                    cols[n] = np.array([f.get(n) for _, f in rows], dtype=object)
            out.append((kind, np.array([t for t, _ in rows], dtype=np.int64), cols))
        return out


@dataclass
class _Ctx:
    pop: Population
    ledger: Ledger
    events: EventLog
    rates: FraudRates
    rng: Rng
    balances: BalanceIndex
    taken: Arr  # customers already used by a typology (cases stay disjoint)
    mule_dests: list[int]  # external accounts that receive stolen money, shared across cases
    rows: list[dict[str, int]]


def inject_fraud(
    pop: Population, ledger: Ledger, events: EventLog, rates: FraudRates, rng: Rng
) -> None:
    """Add every typology to the ledger and event log (mutates both)."""
    frame = ledger.frame()
    balances = BalanceIndex(frame, pop.opening)
    dests = [pop.new_external() for _ in range(max(3, pop.n // 300))]
    ctx = _Ctx(pop, ledger, events, rates, rng, balances, np.zeros(pop.n, bool), dests, [])
    _compromised_terminals(ctx, frame)
    _account_takeover(ctx)
    _card_testing(ctx)
    _money_mules(ctx)
    _app_scams(ctx)
    ledger.add_rows(ctx.rows)


def _count(rng: Rng, n: int, rate: float) -> int:
    return 0 if rate <= 0 or n == 0 else max(1, int(rng.binomial(n, rate)))


def _weighted_order(rng: Rng, weights: Arr) -> Arr:
    """Random order without replacement, each item drawn with probability proportional to weight."""
    w = np.asarray(weights, dtype=float)
    keys = np.where(w > 0, np.log(rng.random(len(w))) / np.where(w > 0, w, 1.0), -np.inf)
    order = np.argsort(-keys, kind="stable")
    return order[w[order] > 0]


def _uniform(rng: Rng, low: float, high: float) -> int:
    return int(rng.uniform(low, high))


def _fraud_time(rng: Rng, days: int, lo: float, hi: float, night: float, day_hours: Arr) -> int:
    """A moment in [lo, hi) of the period; at night (00-05) with probability ``night``."""
    day = int(rng.integers(int(lo * days), max(int(lo * days) + 1, int(hi * days))))
    hour = int(rng.integers(0, 6)) if rng.random() < night else int(rng.choice(day_hours))
    return day * DAY + hour * HOUR + int(rng.integers(0, HOUR))


def _tx(ctx: _Ctx, **cols: int) -> None:
    ctx.rows.append(cols)


def _login(ctx: _Ctx, t: int, cust: int, dev: int, ip: int, method: str, ok: bool = True) -> None:
    ctx.events.add("login", t, customer_id=cust, device_id=dev, ip=ip, success=ok, method=method)


def _label_entity(
    ctx: _Ctx, t: int, kind: str, entity_id: str, label: str, typ: int, reported: bool = False
) -> None:
    """Entity-level facts (mule account, compromised terminal ...) found by investigators."""
    ctx.events.add(
        "label",
        t,
        entity_type=kind,
        entity_id=entity_id,
        label=label,
        typology=TYPOLOGIES[typ],
        source=SOURCES[CUSTOMER_REPORT if reported else INVESTIGATION],
    )


def _report_delay(rng: Rng, mean_days: float) -> int:
    """Customer-reported fraud: usually within a day or two, never more than five days."""
    return int(min(rng.exponential(mean_days * DAY), 5 * DAY)) + 10 * MIN


def _split(rng: Rng, total: int, parts: int) -> list[int]:
    shares = rng.dirichlet(np.full(parts, 2.0))
    return [max(100, int(total * s)) for s in np.sort(shares)]  # escalating amounts


def _compromised_terminals(ctx: _Ctx, frame: dict[str, Arr]) -> None:
    """Skimmers at busy POS terminals: a share of card_present payments there is later confirmed
    fraud, and some skimmed cards are then cashed out online."""
    pop, rng = ctx.pop, ctx.rng
    cp = np.flatnonzero((frame["channel"] == CP) & (frame["terminal"] >= 0))
    busy = np.bincount(frame["terminal"][cp], minlength=pop.n_terminals)[pop.pos_terminals]
    k = _count(rng, len(pop.pos_terminals), ctx.rates.compromised_terminal)
    by_terminal = cp[np.argsort(frame["terminal"][cp], kind="stable")]
    bounds = np.searchsorted(frame["terminal"][by_terminal], np.arange(pop.n_terminals + 1))
    t = frame["t"]
    for term in pop.pos_terminals[_weighted_order(rng, np.sqrt(busy))[:k]]:
        rows = by_terminal[bounds[term] : bounds[term + 1]]
        anchor = int(rng.choice(rows))
        start = max(0, int(t[anchor]) - _uniform(rng, 0, 2 * DAY))
        end = start + _uniform(rng, 2 * DAY, 10 * DAY)
        window = rows[(t[rows] >= start) & (t[rows] < end)]
        skimmed = window[rng.random(len(window)) < ctx.rates.skim_share]
        if len(skimmed) == 0:
            skimmed = np.array([anchor])
        confirmed = end + _uniform(rng, 10 * DAY, 40 * DAY)
        frame["typ"][skimmed], frame["label_src"][skimmed] = TERM, INVESTIGATION
        frame["label_at"][skimmed] = confirmed
        _label_entity(ctx, confirmed, "terminal", pop.terminal_id(int(term)), "compromised", TERM)
        for row in skimmed:
            if rng.random() < 0.5:
                _cash_out(ctx, int(frame["cust"][row]), int(frame["acct"][row]), int(t[row]))


def _cash_out(ctx: _Ctx, cust: int, acct: int, skimmed_at: int) -> None:
    rng, pop = ctx.rng, ctx.pop
    at = skimmed_at + _uniform(rng, 1 * DAY, 20 * DAY)
    ip = pop.fraud_ip(rng) if rng.random() < 0.5 else -1
    times = []
    for _ in range(int(rng.integers(1, 5))):
        at += _uniform(rng, 10 * MIN, 2 * DAY)
        m = int(rng.choice(pop.high_value_merchants))
        cents = int(rng.lognormal(np.log(18_000), 0.6))
        times.append(at)
        _tx(
            ctx,
            t=at,
            cust=cust,
            acct=acct,
            cents=cents,
            channel=CO,
            direction=DEBIT,
            ip=ip,
            merchant=m,
            mcc=int(pop.merch_mcc[m]),
            typ=TERM,
            label_src=CHARGEBACK,
            label_at=at,
        )
    _set_label_time(ctx, len(times), max(times) + _uniform(rng, 5 * DAY, 45 * DAY))


def _set_label_time(ctx: _Ctx, last_n: int, at: int) -> None:
    """All rows of a case are labelled when the case is reported."""
    for row in ctx.rows[len(ctx.rows) - last_n :]:
        row["label_at"] = max(at, row["t"] + MIN)


def _account_takeover(ctx: _Ctx) -> None:
    """New device + new IP, credential/contact change, new payee, then the balance drained."""
    pop, rng = ctx.pop, ctx.rng
    k = _count(rng, pop.n, ctx.rates.account_takeover)
    done = 0
    for v in _weighted_order(rng, np.where(ctx.taken, 0.0, 1.0 + pop.income)):
        if done == k:
            break
        t0 = _fraud_time(rng, pop.days, 0.1, 0.9, 0.65, np.arange(6, 24))
        acct = int(pop.cur_acct[v])
        balance = ctx.balances.at(acct, t0)
        if balance < 30_000:
            continue  # fraudsters move on from near-empty accounts
        _one_takeover(ctx, int(v), acct, t0, balance)
        ctx.taken[v] = True
        done += 1


def _one_takeover(ctx: _Ctx, v: int, acct: int, t0: int, balance: int) -> None:
    pop, rng, ev = ctx.pop, ctx.rng, ctx.events
    # A VPN user may already have used a shared hosting address: theirs must be fresh too.
    dev, ip = pop.new_device(v, t0, rng), pop.fraud_ip(rng, fresh=bool(pop.vpn_user[v]))
    for i in range(int(rng.integers(0, 4)) if rng.random() < 0.4 else 0):
        _login(ctx, t0 - (i + 1) * _uniform(rng, 20 * SEC, 5 * MIN), v, dev, ip, "password", False)
    _login(ctx, t0, v, dev, ip, "otp")  # phished or SIM-swapped one-time password
    t = t0 + _uniform(rng, 20 * SEC, 60 * SEC)
    ev.add("device_bind", t, customer_id=v, device_id=dev, ip=ip, device_model=pop.dev_model[dev])
    if rng.random() < 0.7:
        t += _uniform(rng, 30 * SEC, 3 * MIN)
        field = str(rng.choice(["password", "phone", "email"], p=[0.4, 0.35, 0.25]))
        ev.add("profile_change", t, customer_id=v, field=field, device_id=dev, ip=ip)
    t += _uniform(rng, 1 * MIN, 5 * MIN)
    dest = int(rng.choice(ctx.mule_dests))
    payee = pop.new_payee(v, t, dest, "person")
    ev.add("payee_add", t, customer_id=v, account_id=acct, payee_id=payee, device_id=dev, ip=ip)
    parts = _split(rng, int(balance * rng.uniform(0.7, 0.95)), int(rng.integers(1, 4)))
    for cents in parts:
        t += _uniform(rng, 30 * SEC, 20 * MIN)
        channel = IP if rng.random() < 0.6 else TR
        _tx(
            ctx,
            t=t,
            cust=v,
            acct=acct,
            cents=cents,
            channel=channel,
            direction=DEBIT,
            device=dev,
            ip=ip,
            payee=payee,
            cpty=dest,
            typ=ATO,
            label_src=CUSTOMER_REPORT,
        )
    report = t + _report_delay(rng, 1.0)
    _set_label_time(ctx, len(parts), report)
    later = report + _uniform(rng, 1 * DAY, 7 * DAY)
    _label_entity(ctx, report, "customer", pop.customer_id(v), "account_takeover", ATO, True)
    _label_entity(ctx, later, "device", pop.device_id(dev), "fraudster", ATO)
    _label_entity(ctx, later, "ip", pop.ip_str[ip], "fraudster", ATO)
    _label_entity(ctx, later, "payee", pop.payee_id(payee), "mule", ATO)


def _card_testing(ctx: _Ctx) -> None:
    """Bursts of tiny online payments at many distinct merchants, sometimes then a big one."""
    pop, rng = ctx.pop, ctx.rng
    k = _count(rng, pop.n, ctx.rates.card_testing)
    eligible = (pop.has_card | (pop.cc_acct >= 0)) & ~ctx.taken
    for v in _weighted_order(rng, eligible.astype(float))[:k]:
        ctx.taken[v] = True
        use_cc = pop.cc_acct[v] >= 0 and (not pop.has_card[v] or rng.random() < 0.4)
        acct = int(pop.cc_acct[v] if use_cc else pop.cur_acct[v])
        t = _fraud_time(rng, pop.days, 0.05, 0.95, 0.4, np.arange(6, 24))
        ip = pop.fraud_ip(rng) if rng.random() < 0.3 else -1
        n = int(rng.integers(5, 26))
        merchants = rng.choice(pop.test_merchants, size=n, replace=False, p=pop.test_weights)
        for m in merchants:
            t += int(rng.exponential(20 * SEC)) + 2 * SEC
            _tx(
                ctx,
                t=t,
                cust=int(v),
                acct=acct,
                cents=int(rng.integers(50, 301)),
                channel=CO,
                direction=DEBIT,
                ip=ip,
                merchant=int(m),
                mcc=int(pop.merch_mcc[m]),
                typ=CT,
                label_src=CHARGEBACK,
            )
        for _ in range(int(rng.integers(1, 3)) if rng.random() < 0.6 else 0):
            t += _uniform(rng, 10 * MIN, 3 * HOUR)
            m = int(rng.choice(pop.high_value_merchants))
            _tx(
                ctx,
                t=t,
                cust=int(v),
                acct=acct,
                cents=int(rng.lognormal(np.log(35_000), 0.5)),
                channel=CO,
                direction=DEBIT,
                ip=ip,
                merchant=m,
                mcc=int(pop.merch_mcc[m]),
                typ=CT,
                label_src=CHARGEBACK,
            )
            n += 1
        _set_label_time(ctx, n, t + _uniform(rng, 5 * DAY, 45 * DAY))


def _money_mules(ctx: _Ctx) -> None:
    """Accounts that receive many credits from distinct senders and pass them on within hours."""
    pop, rng = ctx.pop, ctx.rng
    k = _count(rng, pop.n, ctx.rates.money_mule)
    age_w = np.array([4.0, 2.0, 0.7, 0.2, 0.1])[pop.age]
    w = age_w * np.where(pop.tenure < 2, 2.0, 1.0) * np.where(pop.income == 0, 1.5, 1.0)
    w = np.where(pop.sme | ctx.taken, 0.0, w)
    for v in _weighted_order(rng, w)[:k]:
        ctx.taken[v] = True
        _one_mule(ctx, int(v))


def _one_mule(ctx: _Ctx, v: int) -> None:
    pop, rng, ev = ctx.pop, ctx.rng, ctx.events
    start = _fraud_time(rng, pop.days, 0.05, 0.75, 0.1, np.arange(8, 22))
    end = start + _uniform(rng, 5 * DAY, 20 * DAY)
    acct = int(pop.cur_acct[v])
    handler = rng.random() < 0.4  # the mule's handler operates the account from their own phone
    if handler:
        dev, ip = pop.new_device(v, start, rng), pop.fraud_ip(rng)
    else:
        dev, ip = int(pop.dev_start[v]), int(pop.home_start[v])
    method = "otp" if handler else pop.login_method(dev, rng)
    _login(ctx, start, v, dev, ip, method)
    if handler:
        ev.add(
            "device_bind",
            start + 30 * SEC,
            customer_id=v,
            device_id=dev,
            ip=ip,
            device_model=pop.dev_model[dev],
        )
    payees = []
    for i in range(int(rng.integers(1, 3))):
        dest = pop.new_external()
        payees.append((pop.new_payee(v, start + (i + 2) * MIN, dest, "business"), dest))
        ev.add(
            "payee_add",
            start + (i + 2) * MIN,
            customer_id=v,
            account_id=acct,
            payee_id=payees[-1][0],
            device_id=dev,
            ip=ip,
        )
    confirmed = end + _uniform(rng, 1 * DAY, 8 * DAY)
    n_in = int(rng.integers(6, 21))
    arrivals = np.sort(start + 10 * MIN + rng.integers(0, end - start, size=n_in))
    for t_in in arrivals.tolist():
        cents = int(rng.lognormal(np.log(90_000), 0.5))
        _tx(
            ctx,
            t=t_in,
            cust=v,
            acct=acct,
            cents=cents,
            channel=IP if rng.random() < 0.6 else TR,
            direction=CREDIT,
            cpty=pop.new_external(),
            typ=MULE,
            label_src=INTERBANK,
            label_at=min(t_in + _uniform(rng, 3 * DAY, 20 * DAY), confirmed),
        )
        t_out = t_in + _uniform(rng, 30 * MIN, 6 * HOUR)
        out = dict(
            t=t_out,
            cust=v,
            acct=acct,
            direction=DEBIT,
            typ=MULE,
            label_src=INVESTIGATION,
            label_at=min(t_out + _uniform(rng, 3 * DAY, 20 * DAY), confirmed),
        )
        if rng.random() < 0.2:  # cash out at an ATM instead
            cents = min(50_000, max(5_000, cents // 5_000 * 5_000))
            _tx(ctx, **out, cents=cents, channel=ATM, terminal=pop.random_atm(rng), mcc=6011)
            continue
        payee, dest = payees[int(rng.integers(0, len(payees)))]
        _login(
            ctx, t_out - _uniform(rng, 20 * SEC, 3 * MIN), v, dev, ip, pop.login_method(dev, rng)
        )
        _tx(
            ctx,
            **out,
            cents=int(cents * rng.uniform(0.85, 0.97)),
            channel=IP,
            device=dev,
            ip=ip,
            payee=payee,
            cpty=dest,
        )
    _label_entity(ctx, confirmed, "account", pop.account_id(acct), "mule", MULE)
    _label_entity(ctx, confirmed, "customer", pop.customer_id(v), "mule", MULE)
    for payee, _ in payees:
        _label_entity(ctx, confirmed, "payee", pop.payee_id(payee), "mule", MULE)


def _app_scams(ctx: _Ctx) -> None:
    """Victims (skewed elderly) pay a new payee themselves, from their own device and home IP."""
    pop, rng = ctx.pop, ctx.rng
    k = _count(rng, pop.n, ctx.rates.app_scam)
    age_w = np.array([0.4, 0.6, 1.0, 3.0, 5.0])[pop.age] * np.where(pop.sme, 0.3, 1.0)
    done = 0
    for v in _weighted_order(rng, np.where(ctx.taken, 0.0, age_w)):
        if done == k:
            break
        t0 = _fraud_time(rng, pop.days, 0.05, 0.9, 0.0, np.arange(9, 19))
        acct = int(pop.cur_acct[v])
        balance = ctx.balances.at(acct, t0)
        if balance < 100_000:
            continue
        _one_app(ctx, int(v), acct, t0, balance)
        ctx.taken[v] = True
        done += 1


def _one_app(ctx: _Ctx, v: int, acct: int, t0: int, balance: int) -> None:
    pop, rng, ev = ctx.pop, ctx.rng, ctx.events
    dev, ip = int(pop.dev_start[v]), int(pop.home_start[v])  # the victim's own usual channel
    method = pop.login_method(dev, rng)
    _login(ctx, t0, v, dev, ip, method)
    t = t0 + _uniform(rng, 2 * MIN, 8 * MIN)
    dest = int(rng.choice(ctx.mule_dests))
    payee = pop.new_payee(v, t, dest, "person")
    ev.add("payee_add", t, customer_id=v, account_id=acct, payee_id=payee, device_id=dev, ip=ip)
    total = min(balance * rng.uniform(0.3, 0.9), rng.lognormal(np.log(500_000), 0.6))
    parts = _split(rng, int(total), int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15])))
    for i, cents in enumerate(parts):
        t += _uniform(rng, 3 * MIN, 15 * MIN) if i == 0 else _uniform(rng, 20 * MIN, DAY)
        if i:  # the scammer calls back later: a fresh session
            _login(ctx, t - _uniform(rng, 30 * SEC, 3 * MIN), v, dev, ip, method)
        _tx(
            ctx,
            t=t,
            cust=v,
            acct=acct,
            cents=cents,
            channel=IP if rng.random() < 0.7 else TR,
            direction=DEBIT,
            device=dev,
            ip=ip,
            payee=payee,
            cpty=dest,
            typ=APP,
            label_src=CUSTOMER_REPORT,
        )
    first = int(ctx.rows[-len(parts)]["t"])  # reported within five days of the first payment
    report = max(t + 10 * MIN, min(t + _report_delay(rng, 1.5), first + 5 * DAY))
    _set_label_time(ctx, len(parts), report)
    _label_entity(
        ctx, report + _uniform(rng, 1 * DAY, 5 * DAY), "payee", pop.payee_id(payee), "mule", APP
    )
