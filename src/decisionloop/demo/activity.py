"""Legitimate activity of the demo bank's population: card payments, transfers, standing orders,
income and app sessions, with weekly and daily seasonality and per-customer habits.

Transactions go to the :class:`Ledger`, other events to the :class:`EventLog`; fraud is injected
afterwards by :mod:`decisionloop.demo.typologies`.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from decisionloop.demo.population import N_BRANCHES, Population, pick, pick_in
from decisionloop.demo.typologies import (
    ATM,
    CO,
    CP,
    CREDIT,
    DAY,
    DEBIT,
    HOUR,
    IP,
    MIN,
    SEC,
    TR,
    Arr,
    EventLog,
    Ledger,
    Rng,
)

# Hand-aligned data tables.
# fmt: off
_DOW = {False: np.array([0.95, 0.95, 0.97, 1.0, 1.12, 1.18, 0.83]),  # Monday first
        True: np.array([1.15, 1.15, 1.15, 1.15, 1.15, 0.4, 0.15])}  # SMEs rest at weekends
_HOURS = np.array([  # relative activity per hour of day, one row per channel, then sessions
    [ 2, 1, 1, 1, 1, 2,  6, 15, 30, 45, 60, 70, 85, 80, 70, 70, 75, 85, 90, 75, 50, 30, 15,  6],
    [14, 8, 5, 4, 4, 6, 12, 20, 30, 40, 45, 50, 60, 55, 50, 50, 55, 65, 80, 95, 99, 95, 70, 35],
    [ 3, 2, 1, 1, 1, 2,  8, 25, 50, 70, 80, 80, 75, 70, 70, 65, 60, 55, 50, 50, 40, 30, 15,  6],
    [ 6, 3, 2, 1, 1, 2,  8, 20, 35, 45, 50, 55, 60, 55, 50, 50, 55, 60, 70, 75, 70, 55, 30, 12],
    [ 4, 2, 1, 1, 1, 2,  6, 15, 30, 45, 55, 65, 70, 65, 60, 60, 70, 80, 80, 65, 45, 30, 20, 10],
    [ 8, 4, 2, 2, 2, 4, 20, 45, 50, 45, 40, 40, 50, 45, 40, 40, 45, 55, 65, 75, 80, 70, 45, 20],
], dtype=float)
_SESSION = 5  # row of _HOURS used for app sessions
_SME_HOURS = np.array([0.3] * 7 + [1.6] * 11 + [0.5] * 6)  # businesses work office hours
_APP_ACTIONS = ("open_app", "view_balance", "view_transactions", "view_statement", "view_card",
                "update_settings", "view_offers")
_APP_ACTION_P = (0.1, 0.35, 0.25, 0.08, 0.1, 0.04, 0.08)
# fmt: on


def simulate(pop: Population, ledger: Ledger, log: EventLog, tx_rng: Rng, session_rng: Rng) -> None:
    """Add the period's legitimate activity to ``ledger`` and ``log``."""
    _discretionary(pop, tx_rng, ledger, log)
    _new_payees(pop, tx_rng, ledger, log)
    _recurring(pop, tx_rng, ledger)
    _mirror_internal(pop, tx_rng, ledger)  # after every other debit: it mirrors them
    _sessions(pop, session_rng, log)


def _daily_counts(pop: Population, rate: Arr, rng: Rng) -> tuple[Arr, Arr]:
    """Poisson counts per customer-day with weekly seasonality; returns (customer, day) per item."""
    dow = (pop.start.weekday() + np.arange(pop.days)) % 7
    factor = np.where(pop.sme[:, None], _DOW[True][dow][None, :], _DOW[False][dow][None, :])
    flat = np.repeat(np.arange(pop.n * pop.days), rng.poisson(rate[:, None] * factor).ravel())
    return flat // pop.days, flat % pop.days


def _times(rng: Rng, day: Arr, profile: Arr, sme: Arr) -> Arr:
    """Timestamps with the hour-of-day profile (rows of ``profile`` chosen per item)."""
    weights = profile * np.where(sme[:, None], _SME_HOURS[None, :], 1.0)
    hour = pick(rng, weights)
    t: Arr = day * DAY + hour * HOUR + (rng.random(len(day)) * HOUR).astype(np.int64)
    return t


def _session_times(rng: Rng, day: Arr, sme: Arr) -> Arr:
    return _times(rng, day, np.broadcast_to(_HOURS[_SESSION], (len(day), 24)), sme)


def _discretionary(pop: Population, rng: Rng, ledger: Ledger, ev: EventLog) -> None:
    cust, day = _daily_counts(pop, pop.tx_rate, rng)
    n = len(cust)
    channel = pick(rng, pop.mix[cust])
    t = _times(rng, day, _HOURS[channel], pop.sme[cust])
    cols = {
        name: np.full(n, -1, dtype=np.int64)
        for name in ("device", "ip", "merchant", "terminal", "mcc", "payee", "cpty")
    }
    acct = pop.cur_acct[cust].copy()
    card = (channel == CP) | (channel == CO)
    use_cc = card & (pop.cc_acct[cust] >= 0) & (~pop.has_card[cust] | (rng.random(n) < 0.35))
    acct[use_cc] = pop.cc_acct[cust[use_cc]]
    merchant = cols["merchant"]
    for ch, fav, fav_n, ids, cdf in (
        (CP, pop.fav_phys, pop.fav_phys_n, pop.phys_ids, pop.phys_cdf),
        (CO, pop.fav_online, pop.fav_online_n, pop.online_ids, pop.online_cdf),
    ):
        rows = np.flatnonzero(channel == ch)
        c = cust[rows]
        favourite = fav[c, (fav_n[c] * rng.random(len(rows)) ** 2).astype(np.int64)]
        anywhere = ids[np.searchsorted(cdf, rng.random(len(rows)) * cdf[-1])]
        merchant[rows] = np.where(rng.random(len(rows)) < 0.8, favourite, anywhere)
    cp = np.flatnonzero(channel == CP)
    cols["terminal"][cp] = pick_in(rng, pop.term_start[merchant[cp]], pop.term_n[merchant[cp]])
    atm = np.flatnonzero(channel == ATM)
    branch = np.where(
        rng.random(len(atm)) < 0.85, pop.branch[cust[atm]], rng.integers(0, N_BRANCHES, len(atm))
    )
    cols["terminal"][atm] = pop.atm_by_branch[branch, rng.integers(0, 3, len(atm))]
    cols["mcc"][card] = pop.merch_mcc[merchant[card]]
    cols["mcc"][atm] = 6011
    m = np.maximum(merchant, 0)
    log_amount = (
        pop.merch_logmed[m] + pop.amount_offset[cust] + pop.merch_sigma[m] * rng.normal(size=n)
    )
    cents = np.maximum(30, np.exp(log_amount) * 100).astype(np.int64)
    cents[atm] = rng.choice(
        [2_000, 4_000, 5_000, 10_000, 15_000, 20_000, 30_000],
        len(atm),
        p=[0.15, 0.1, 0.25, 0.25, 0.1, 0.1, 0.05],
    ) * np.where(pop.sme[cust[atm]], 2, 1)
    online = np.flatnonzero((channel == CO) & (rng.random(n) < 0.5))  # 3-D Secure shares the IP
    cols["ip"][online] = pop.context(rng, cust[online], t[online])[1]
    pay = np.flatnonzero((channel == TR) | (channel == IP))
    payee = pick_in(rng, pop.pay_start[cust[pay]], pop.pay_n[cust[pay]], 1.5)
    payee = np.where(pop.pay_created_np[payee] <= t[pay], payee, pop.pay_start[cust[pay]])
    cols["payee"][pay], cols["cpty"][pay] = payee, pop.pay_cpty_np[payee]
    cents[pay] = (pop.pay_typical[payee] * rng.lognormal(0, 0.35, len(pay))).astype(np.int64)
    # Transfers are customer-initiated: made online, a minute or two after a login.
    dev, ip = _logged_in(pop, rng, ev, cust[pay], t[pay], (20 * SEC, 4 * MIN))
    cols["device"][pay], cols["ip"][pay] = dev, ip
    ledger.add(t=t, cust=cust, acct=acct, cents=cents, channel=channel, direction=DEBIT, **cols)


def _logged_in(
    pop: Population, rng: Rng, ev: EventLog, cust: Arr, t: Arr, lead: tuple[int, int]
) -> tuple[Arr, Arr]:
    """Device and IP of customer actions at ``t``, each a ``lead`` range after its own login."""
    dev, ip = pop.context(rng, cust, t)
    login_t = t - rng.integers(*lead, len(t))
    _login(ev, login_t, cust, dev, ip, pop.login_methods(dev, rng))
    return dev, ip


def _login(
    ev: EventLog, t: Arr, cust: Arr, dev: Arr, ip: Arr, method: Arr | str, ok: bool = True
) -> None:
    ev.add_batch("login", t, customer_id=cust, device_id=dev, ip=ip, success=ok, method=method)


def _new_payees(pop: Population, rng: Rng, ledger: Ledger, ev: EventLog) -> None:
    """Payees added during the period: login, payee_add, and usually a first payment soon after."""
    created = pop.pay_created_np
    rows = np.flatnonzero(pop.in_period(created))
    cust = np.array(pop.pay_cust)[rows]
    dev, ip = _logged_in(pop, rng, ev, cust, created[rows], (30 * SEC, 3 * MIN))
    ev.add_batch(
        "payee_add",
        created[rows],
        customer_id=cust,
        account_id=pop.cur_acct[cust],
        payee_id=rows,
        device_id=dev,
        ip=ip,
    )
    pay = rng.random(len(rows)) < 0.85
    big = rng.random(len(rows)) < 0.1  # a deposit, a car: large first payments are not all scams
    cents = np.where(big, rng.lognormal(np.log(250_000), 0.7, len(rows)), pop.pay_typical[rows])
    ledger.add(
        t=(created[rows] + rng.integers(1 * MIN, 15 * MIN, len(rows)))[pay],
        cust=cust[pay],
        acct=pop.cur_acct[cust][pay],
        cents=cents.astype(np.int64)[pay],
        channel=np.where(rng.random(len(rows)) < 0.5, IP, TR)[pay],
        direction=DEBIT,
        device=dev[pay],
        ip=ip[pay],
        payee=rows[pay],
        cpty=pop.pay_cpty_np[rows][pay],
    )


def _month_days(pop: Population, dom: int, backwards: bool) -> list[int]:
    """Day index of day-of-month ``dom`` in each month, moved off weekends like a bank would."""
    first, out = pop.start.date(), []
    for d in range(pop.days):
        if (first + timedelta(days=d)).day != dom:
            continue
        moved = d
        while (first + timedelta(days=moved)).weekday() >= 5:
            moved += -1 if backwards else 1
        if 0 <= moved < pop.days:
            out.append(moved)
    return out


def _standing_orders(
    pop: Population,
    rng: Rng,
    ledger: Ledger,
    who: Arr,
    days: list[int],
    cents: Arr,
    cpty: Arr,
    payee: Arr | None = None,
) -> None:
    """Bank-executed orders run in the morning batch and carry no device or IP."""
    for d in days:
        t = d * DAY + rng.integers(6 * HOUR, 8 * HOUR, len(who))
        ok = cents > 0
        ledger.add(
            t=t[ok],
            cust=who[ok],
            acct=pop.cur_acct[who][ok],
            cents=cents[ok],
            channel=TR,
            direction=DEBIT,
            cpty=cpty[ok],
            payee=(-1 if payee is None else payee[ok]),
        )


def _recurring(pop: Population, rng: Rng, ledger: Ledger) -> None:
    """Rent, income (sized to each customer's spending), savings sweeps and card repayments."""
    renters = np.flatnonzero(pop.rent_payee >= 0)
    rent = (pop.income_cents[renters] * rng.uniform(0.25, 0.4, len(renters))).astype(np.int64)
    rent_payees = pop.rent_payee[renters]
    _standing_orders(
        pop,
        rng,
        ledger,
        renters,
        _month_days(pop, 1, False),
        rent,
        pop.pay_cpty_np[rent_payees],
        rent_payees,
    )
    frame = ledger.frame()
    months = max(pop.days / 30.44, 1.0)
    spend = (
        np.bincount(
            frame["cust"], weights=frame["cents"] * (frame["direction"] == DEBIT), minlength=pop.n
        )
        / months
    )
    income = np.maximum(pop.income_cents, spend * rng.uniform(1.02, 1.25, pop.n)).astype(np.int64)
    savers = np.flatnonzero(pop.sav_acct >= 0)
    sweep = ((income - spend)[savers] * rng.uniform(0.3, 0.8, len(savers))).astype(np.int64)
    _standing_orders(
        pop, rng, ledger, savers, _month_days(pop, 26, True), sweep, pop.sav_acct[savers]
    )
    _card_repayments(pop, rng, ledger, frame)
    _income(pop, rng, ledger, income)


def _card_repayments(pop: Population, rng: Rng, ledger: Ledger, frame: dict[str, Arr]) -> None:
    """On the 5th the current account pays off the previous month's credit-card spending."""
    month_of_day = np.array([(pop.start.date() + timedelta(days=d)).month for d in range(pop.days)])
    cc_rows = np.flatnonzero(pop.is_cc_acct[frame["acct"]])
    holders = np.flatnonzero(pop.cc_acct >= 0)
    for d in _month_days(pop, 5, False):
        prev = np.flatnonzero(month_of_day == (month_of_day[d] - 2) % 12 + 1)
        if len(prev) == 0:
            continue
        rows = cc_rows[np.isin(frame["t"][cc_rows] // DAY, prev)]
        owed = np.bincount(
            frame["acct"][rows], weights=frame["cents"][rows], minlength=len(pop.acct_ids)
        )
        _standing_orders(
            pop,
            rng,
            ledger,
            holders,
            [d],
            owed[pop.cc_acct[holders]].astype(np.int64),
            pop.cc_acct[holders],
        )


def _income(pop: Population, rng: Rng, ledger: Ledger, income: Arr) -> None:
    """Salaries on the 25th, pensions on the 1st, SME invoices paid by clients on weekdays, and
    retail money from friends."""
    employers = np.array([pop.new_external() for _ in range(max(5, pop.n // 15))])
    pension_fund = pop.new_external()
    retail = np.flatnonzero(~pop.sme)
    sender = np.where(
        pop.pensioner[retail], pension_fund, employers[rng.integers(0, len(employers), len(retail))]
    )
    for pensions in (True, False):
        who = retail[pop.pensioner[retail] == pensions]
        for d in _month_days(pop, 1 if pensions else 25, not pensions):
            _credits(
                pop,
                ledger,
                who,
                d * DAY + rng.integers(7 * HOUR, 9 * HOUR, len(who)),
                (income[who] * rng.uniform(0.98, 1.02, len(who))).astype(np.int64),
                sender[pop.pensioner[retail] == pensions],
                TR,
            )
    sme = np.flatnonzero(pop.sme)
    rate = np.where(pop.sme, 1.5, 0.05)  # invoices per business day / friend transfers per day
    cust, day = _daily_counts(pop, rate, rng)
    is_sme = pop.sme[cust]
    per_invoice = income / (rate * 21.7)  # 21.7 business days a month
    cents = np.where(
        is_sme,
        per_invoice[cust] * rng.lognormal(-0.32, 0.8, len(cust)),
        rng.lognormal(np.log(4_000), 0.8, len(cust)),
    ).astype(np.int64)
    clients = np.array([pop.new_external() for _ in range(max(40, len(sme) * 10))])
    friends = np.array([pop.new_external() for _ in range(max(40, pop.n))])
    pools = np.where(
        is_sme,
        clients[(cust * 7 + rng.integers(0, 25, len(cust))) % len(clients)],
        friends[(cust * 3 + rng.integers(0, 3, len(cust))) % len(friends)],
    )
    t = _times(rng, day, _HOURS[np.where(is_sme, TR, IP)], is_sme)
    _credits(
        pop,
        ledger,
        cust,
        t,
        np.maximum(cents, 500),
        pools,
        np.where(is_sme & (rng.random(len(cust)) < 0.7), TR, IP),
    )


def _credits(
    pop: Population, ledger: Ledger, cust: Arr, t: Arr, cents: Arr, cpty: Arr, channel: Arr | int
) -> None:
    ledger.add(
        t=t,
        cust=cust,
        acct=pop.cur_acct[cust],
        cents=cents,
        channel=channel,
        direction=CREDIT,
        cpty=cpty,
    )


def _mirror_internal(pop: Population, rng: Rng, ledger: Ledger) -> None:
    """A debit to another account of this bank lands as a credit there a few seconds later."""
    f = ledger.frame()
    rows = np.flatnonzero(
        (f["direction"] == DEBIT) & (f["cpty"] >= 0) & (f["cpty"] < len(pop.acct_ids))
    )
    dest = f["cpty"][rows]
    ledger.add(
        t=f["t"][rows] + rng.integers(1 * SEC, 5 * SEC, len(rows)),
        cust=pop.acct_cust[dest],
        acct=dest,
        cents=f["cents"][rows],
        channel=f["channel"][rows],
        direction=CREDIT,
        cpty=f["acct"][rows],
    )


def _sessions(pop: Population, rng: Rng, ev: EventLog) -> None:
    """Browsing sessions (login + app events), device binds on first use, profile changes."""
    cust, day = _daily_counts(pop, pop.session_rate, rng)
    t = _session_times(rng, day, pop.sme[cust])
    dev, ip = pop.context(rng, cust, t)
    failed = np.flatnonzero(rng.random(len(cust)) < 0.03)
    retry_t = t[failed] - rng.integers(5 * SEC, 40 * SEC, len(failed))  # mistyped password
    _login(ev, retry_t, cust[failed], dev[failed], ip[failed], "password", ok=False)
    _login(ev, t, cust, dev, ip, pop.login_methods(dev, rng))
    n_app, offset = 1 + rng.binomial(2, 0.3, len(cust)), np.zeros(len(cust), dtype=np.int64)
    for j in range(3):
        offset += rng.integers(3 * SEC, 90 * SEC, len(cust))
        r = np.flatnonzero(n_app > j)
        action = rng.choice(np.array(_APP_ACTIONS, dtype=object), len(r), p=_APP_ACTION_P)
        ev.add_batch(
            "app_event",
            t[r] + offset[r],
            customer_id=cust[r],
            device_id=dev[r],
            ip=ip[r],
            action=action,
        )
    active = np.array(pop.dev_active)
    new = np.flatnonzero(pop.in_period(active))
    owner = np.array(pop.dev_cust)[new]
    home = pop.home_start[owner]
    _login(ev, active[new], owner, new, home, "otp")  # a new device is enrolled with an OTP
    ev.add_batch(
        "device_bind",
        active[new] + rng.integers(10 * SEC, 60 * SEC, len(new)),
        customer_id=owner,
        device_id=new,
        ip=home,
        device_model=np.array(pop.dev_model, dtype=object)[new],
    )
    who = np.repeat(np.arange(pop.n), rng.poisson(0.12 * pop.days / 90, pop.n))
    when = _session_times(rng, rng.integers(0, pop.days, len(who)), pop.sme[who])
    dev, ip = pop.context(rng, who, when)
    _login(ev, when, who, dev, ip, pop.login_methods(dev, rng))
    fields = rng.choice(
        np.array(["phone", "email", "address", "password"], dtype=object),
        len(who),
        p=[0.2, 0.25, 0.25, 0.3],
    )
    ev.add_batch(
        "profile_change",
        when + rng.integers(20 * SEC, 3 * MIN, len(who)),
        customer_id=who,
        field=fields,
        device_id=dev,
        ip=ip,
    )
