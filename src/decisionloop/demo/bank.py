"""A synthetic bank for demos: customers, accounts, devices, months of activity, injected fraud.

``generate(BankConfig())`` builds about 2,000 customers over 90 days in a few seconds; everything is
drawn from ``np.random.default_rng(seed)`` so the same config always gives byte-identical
``events.jsonl``. Events use the wire format of the example project (see
``project/example/events/core.yaml``); ground truth for every fraudulent transaction is kept apart
in ``DemoBank.truth`` together with the time its label reaches the bank.
"""

from __future__ import annotations

import csv
import gc
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from decisionloop.demo.typologies import (
    ATM,
    CHANNELS,
    CO,
    CP,
    CREDIT,
    DAY,
    DEBIT,
    DIRECTIONS,
    HOUR,
    IP,
    MIN,
    MISSING,
    SEC,
    SOURCES,
    TR,
    TYPOLOGIES,
    Arr,
    EventLog,
    FraudRates,
    Ledger,
    Rng,
    balances_before,
    inject_fraud,
)

__all__ = ["BankConfig", "DemoBank", "FraudRates", "Population", "generate", "write"]

# Hand-aligned data tables.
# fmt: off
AGE_BANDS = ("18-25", "26-40", "41-60", "61-75", "75+")
INCOME_BANDS = ("low", "middle", "upper_middle", "high")
N_BRANCHES = 20
_AGE_P = {False: [0.12, 0.30, 0.32, 0.18, 0.08], True: [0.04, 0.36, 0.45, 0.13, 0.02]}
_INCOME_P = np.array([  # rows: age band; SME owners use the last row (turnover band)
    [0.50, 0.35, 0.12, 0.03], [0.25, 0.42, 0.23, 0.10], [0.20, 0.38, 0.27, 0.15],
    [0.30, 0.42, 0.20, 0.08], [0.40, 0.40, 0.15, 0.05], [0.25, 0.40, 0.25, 0.10],
])
_MONTHLY_EUR = {False: np.array([1400, 2400, 3800, 6500]), True: np.array([8e3, 2e4, 4.5e4, 1.2e5])}
_TENURE_CAP = np.array([7.0, 22.0, 40.0, 50.0, 60.0])
_DEVICES_P = np.array([  # 1, 2 or 3 devices, by age band then SME
    [0.35, 0.45, 0.20], [0.30, 0.45, 0.25], [0.40, 0.40, 0.20],
    [0.60, 0.30, 0.10], [0.80, 0.17, 0.03], [0.20, 0.40, 0.40],
])
# Channel mix (card_present, card_online, transfer, instant_payment, atm) by age band, then SME.
_CHANNEL_MIX = np.array([
    [0.40, 0.36, 0.05, 0.11, 0.08], [0.46, 0.30, 0.08, 0.09, 0.07], [0.54, 0.22, 0.09, 0.07, 0.08],
    [0.58, 0.12, 0.11, 0.05, 0.14], [0.60, 0.05, 0.13, 0.03, 0.19], [0.25, 0.20, 0.35, 0.15, 0.05],
])
_TX_RATE = np.array([1.3, 1.5, 1.35, 1.0, 0.65, 2.8])  # discretionary transactions per day
_SESSION_RATE = np.array([0.55, 0.45, 0.3, 0.18, 0.08, 0.6])  # app/web sessions per day
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
_CATEGORIES = (  # category, mcc, online, median EUR, sigma, share within physical/online
    ("grocery", 5411, False, 28, 0.6, 0.26),      ("restaurant", 5812, False, 32, 0.5, 0.12),
    ("fast_food", 5814, False, 11, 0.4, 0.10),    ("fuel", 5541, False, 55, 0.4, 0.08),
    ("pharmacy", 5912, False, 18, 0.6, 0.06),     ("clothing", 5651, False, 60, 0.7, 0.07),
    ("department_store", 5311, False, 45, 0.8, 0.05),
    ("electronics", 5732, False, 150, 0.9, 0.03), ("bakery_cafe", 5499, False, 7, 0.5, 0.10),
    ("transport", 4111, False, 4, 0.5, 0.06),     ("hotel", 7011, False, 180, 0.6, 0.02),
    ("hardware", 5200, False, 40, 0.8, 0.05),     ("marketplace", 5999, True, 40, 0.9, 0.30),
    ("digital_goods", 5815, True, 9, 0.8, 0.18),  ("subscription", 5968, True, 13, 0.5, 0.12),
    ("travel", 4722, True, 250, 0.7, 0.06),       ("food_delivery", 5814, True, 28, 0.4, 0.15),
    ("electronics_online", 5732, True, 180, 0.8, 0.07),
    ("telecom", 4814, True, 30, 0.4, 0.07),       ("gambling", 7995, True, 25, 0.9, 0.03),
    ("donation", 8398, True, 20, 0.7, 0.02),
)
_RETAIL_PRODUCTS = ("current_account", "debit_card", "credit_card", "savings", "mortgage", "loan")
_SME_PRODUCTS = ("business_current", "business_debit_card", "business_credit_card",
                 "business_savings", "business_loan", "merchant_acquiring")
_TESTING_FRIENDLY = {"digital_goods", "subscription", "donation"}  # card testers' favourites
_HIGH_VALUE = {"electronics_online", "travel", "marketplace"}  # where stolen cards are cashed out
_MOBILE_MODELS = ("iPhone 13", "iPhone 14", "iPhone 15", "Galaxy S22", "Galaxy S23", "Galaxy A54",
                  "Pixel 7", "Pixel 8", "Xiaomi 13")
_DESKTOP_MODELS = ("Windows 11 / Chrome", "Windows 10 / Edge", "macOS / Safari", "macOS / Chrome",
                   "Linux / Firefox")
_APP_ACTIONS = ("open_app", "view_balance", "view_transactions", "view_statement", "view_card",
                "update_settings", "view_offers")
_APP_ACTION_P = (0.1, 0.35, 0.25, 0.08, 0.1, 0.04, 0.08)
_ID_FIELDS = frozenset({"customer_id", "account_id", "device_id", "ip", "merchant_id",
                        "terminal_id", "payee_id", "counterparty_account_id"})
_MONEY_FIELDS = frozenset({"amount", "balance_before"})
_OPTIONAL_TEXT = frozenset({"device_model", "typology", "refers_to_event_id"})
# fmt: on
Event = dict[str, Any]


@dataclass(frozen=True)
class BankConfig:
    seed: int = 7
    customers: int = 2000  # size flag: event volume scales linearly
    days: int = 90
    start: datetime = datetime(2026, 6, 1, tzinfo=UTC)
    fraud_rates: FraudRates = field(default_factory=FraudRates)


@dataclass
class DemoBank:
    config: BankConfig
    customers: list[dict[str, Any]]
    accounts: list[dict[str, Any]]  # balance = closing balance at the end of the period
    devices: list[dict[str, Any]]
    ips: list[dict[str, Any]]
    merchants: list[dict[str, Any]]
    terminals: list[dict[str, Any]]
    payees: list[dict[str, Any]]
    events: list[Event]  # sorted by occurred_at, then event_id
    truth: list[dict[str, Any]]  # one row per fraudulent transaction


def _pick(rng: Rng, probs: Arr) -> Arr:
    """One categorical draw per row of ``probs`` (rows need not be normalised)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cdf[:, -1]
    picked: Arr = np.minimum((u[:, None] > cdf).sum(axis=1), probs.shape[1] - 1)
    return picked


def _pick_in(rng: Rng, start: Arr, count: Arr, skew: float = 1.0) -> Arr:
    """An index in [start, start + count); skew > 1 favours the first items (favourites)."""
    return start + (count * rng.random(len(start)) ** skew).astype(np.int64)


class Population:
    """Customers, their accounts, devices, networks, payees and habits, plus shared merchants."""

    def __init__(self, cfg: BankConfig, rng: Rng) -> None:
        self.n, self.days, self.end, self.start = cfg.customers, cfg.days, cfg.days * DAY, cfg.start
        self._customers(rng)
        self._accounts(rng)
        self._devices(rng)
        self._networks(rng)
        self._merchants(rng)
        self._payees(rng)

    # --- construction ---------------------------------------------------------------------------
    def _customers(self, rng: Rng) -> None:
        n = self.n
        self.sme = rng.random(n) < 0.08
        self.age = np.where(
            self.sme, rng.choice(5, n, p=_AGE_P[True]), rng.choice(5, n, p=_AGE_P[False])
        )
        self.income = _pick(rng, _INCOME_P[np.where(self.sme, 5, self.age)])
        cap = np.where(self.sme, 30.0, _TENURE_CAP[self.age])
        self.tenure = (np.minimum(rng.gamma(2.0, np.where(self.sme, 3.0, 4.0)), cap) + 0.1).round(1)
        branch_w = 1 / np.arange(1, N_BRANCHES + 1) ** 0.6
        self.branch_p = branch_w / branch_w.sum()
        self.branch = rng.choice(N_BRANCHES, n, p=self.branch_p)
        self.has_card = rng.random(n) < np.where(self.age == 4, 0.8, 0.93)
        has_cc = rng.random(n) < np.where(
            self.sme, 0.4, np.array([0.15, 0.3, 0.5, 0.7])[self.income]
        )
        self._has_cc, self._has_sav = has_cc, rng.random(n) < np.where(self.sme, 0.3, 0.45)
        base = np.where(self.sme, 5, self.age)
        self.tx_rate = _TX_RATE[base] * rng.lognormal(0, 0.45, n)
        self.session_rate = _SESSION_RATE[base] * rng.lognormal(0, 0.5, n)
        mix = _CHANNEL_MIX[base] * rng.gamma(8.0, 1 / 8, (n, 5))
        mix[:, [CP, CO, ATM]] *= (self.has_card | has_cc)[:, None]  # no card, no card payments
        mix[~self.has_card, ATM] = 0
        self.mix = mix
        self.amount_offset = (
            np.array([-0.25, 0.0, 0.2, 0.45])[self.income] + 0.9 * self.sme + rng.normal(0, 0.2, n)
        )
        eur = np.where(self.sme, _MONTHLY_EUR[True][self.income], _MONTHLY_EUR[False][self.income])
        self.income_cents = (eur * 100 * rng.lognormal(0, 0.15, n)).astype(np.int64)
        self.pensioner = ~self.sme & ((self.age == 4) | ((self.age == 3) & (rng.random(n) < 0.6)))
        self.products = [self._products(i, rng) for i in range(n)]

    def _products(self, i: int, rng: Rng) -> list[str]:
        if self.sme[i]:
            names = _SME_PRODUCTS
            have = [True, self.has_card[i], self._has_cc[i], self._has_sav[i]]
            have += [rng.random() < 0.3, rng.random() < 0.35]
        else:
            names = _RETAIL_PRODUCTS
            mortgage = (
                1 <= self.age[i] <= 2 and rng.random() < [0.05, 0.2, 0.35, 0.45][self.income[i]]
            )
            have = [True, self.has_card[i], self._has_cc[i], self._has_sav[i], mortgage]
            have.append(rng.random() < 0.1)
        return [name for name, ok in zip(names, have, strict=True) if ok] + ["online_banking"]

    def _accounts(self, rng: Rng) -> None:
        n_acc = 1 + self._has_sav.astype(np.int64) + self._has_cc
        first = np.concatenate([[0], np.cumsum(n_acc)[:-1]])
        self.cur_acct = first
        self.sav_acct = np.where(self._has_sav, first + 1, -1)
        self.cc_acct = np.where(self._has_cc, first + n_acc - 1, -1)
        self.acct_cust = np.repeat(np.arange(self.n), n_acc)
        kind = np.full(len(self.acct_cust), "current", dtype=object)
        kind[self.sav_acct[self.sav_acct >= 0]] = "savings"
        kind[self.cc_acct[self.cc_acct >= 0]] = "credit_card"
        self.acct_kind: list[str] = kind.tolist()
        self.is_cc_acct = kind == "credit_card"
        self.acct_ids = [
            f"A{c:06d}-{i - first[c] + 1}" for i, c in enumerate(self.acct_cust.tolist())
        ]
        tenure_days = self.tenure[self.acct_cust] * 365.25
        age_days = np.where(kind == "current", tenure_days, tenure_days * rng.random(len(kind)))
        self.acct_opened = [
            (self.start - timedelta(days=float(d))).date().isoformat() for d in age_days
        ]
        income = self.income_cents[self.acct_cust]
        opening = np.where(
            kind == "current",
            income * rng.lognormal(np.log(0.8), 0.7, len(kind)),
            income * rng.lognormal(np.log(3.0), 1.0, len(kind)),
        )
        self.opening = np.where(kind == "credit_card", 0, opening).astype(np.int64)
        self.ext_ids: list[str] = []

    def _devices(self, rng: Rng) -> None:
        self.dev_n = 1 + _pick(rng, _DEVICES_P[np.where(self.sme, 5, self.age)])
        self.dev_start = np.concatenate([[0], np.cumsum(self.dev_n)[:-1]])
        cust = np.repeat(np.arange(self.n), self.dev_n)
        is_first = np.arange(len(cust)) == self.dev_start[cust]
        mobile = rng.random(len(cust)) < np.where(
            is_first, np.array([0.95, 0.9, 0.8, 0.6, 0.4])[self.age[cust]], 0.5
        )
        preexisting = is_first | (rng.random(len(cust)) < 0.5)
        active = np.where(
            preexisting,
            -rng.integers(30, 900, len(cust)) * DAY,
            (rng.uniform(0.02, 0.95, len(cust)) * self.end).astype(np.int64),
        )
        models = [
            _MOBILE_MODELS[int(rng.integers(len(_MOBILE_MODELS)))]
            if m
            else _DESKTOP_MODELS[int(rng.integers(len(_DESKTOP_MODELS)))]
            for m in mobile
        ]
        self.dev_cust: list[int] = cust.tolist()
        self.dev_mobile: list[bool] = mobile.tolist()
        self.dev_active: list[int] = active.tolist()
        self.dev_model: list[str] = models
        self.dev_active_np, self.dev_mobile_np = active, mobile

    def _networks(self, rng: Rng) -> None:
        self.ip_str: list[str] = []
        self.ip_kind: list[str] = []
        self.ip_geo: list[str] = []
        self._ip_index: dict[str, int] = {}
        self.home_n = 1 + _pick(rng, np.tile([0.55, 0.35, 0.10], (self.n, 1)))
        self.home_start = np.concatenate([[0], np.cumsum(self.home_n)[:-1]])
        for k in range(int(self.home_n.sum())):  # private 10/8 addresses stand in for home lines
            self._add_ip(f"10.{k // 64516 % 256}.{k // 254 % 254 + 1}.{k % 254 + 1}", "residential")
        per_carrier = max(20, self.n // 30)
        self.mobile_pool = np.array(
            [
                [
                    self._add_ip(f"100.{64 + c}.{k // 254}.{k % 254 + 1}", "mobile")
                    for k in range(per_carrier)
                ]
                for c in range(3)
            ]
        )
        self.carrier = rng.choice(3, self.n, p=[0.45, 0.35, 0.2])
        self.wifi_pool = np.array(
            [
                self._add_ip(f"172.16.{k // 254}.{k % 254 + 1}", "public_wifi")
                for k in range(max(20, self.n // 50))
            ]
        )
        self.hosting_pool = np.array(
            [self._add_ip(f"198.51.100.{k + 1}", "hosting", "foreign") for k in range(120)]
        )
        self.vpn_user = rng.random(self.n) < 0.03  # legitimate VPN users blur the hosting signal
        self._foreign = 0

    def _add_ip(self, ip: str, kind: str, geo: str = "domestic") -> int:
        if ip not in self._ip_index:
            self._ip_index[ip] = len(self.ip_str)
            self.ip_str.append(ip)
            self.ip_kind.append(kind)
            self.ip_geo.append(geo)
        return self._ip_index[ip]

    def _merchants(self, rng: Rng) -> None:
        n_phys, n_online = max(40, self.n // 5), max(40, self.n // 25)
        online = np.array([c[2] for c in _CATEGORIES])
        share = np.array([c[5] for c in _CATEGORIES])
        cats = np.concatenate(
            [
                rng.choice(len(share), n_phys, p=np.where(online, 0, share) / share[~online].sum()),
                rng.choice(
                    len(share), n_online, p=np.where(online, share, 0) / share[online].sum()
                ),
            ]
        )
        self.merch_cat = cats
        self.merch_online = online[cats]
        self.merch_mcc = np.array([_CATEGORIES[c][1] for c in cats])
        self.merch_logmed = np.log([_CATEGORIES[c][3] for c in cats]) + rng.normal(
            0, 0.2, len(cats)
        )
        self.merch_sigma = np.array([_CATEGORIES[c][4] for c in cats])
        pop = rng.lognormal(0, 1.0, len(cats))
        self.merch_branch = np.where(
            self.merch_online, -1, rng.choice(N_BRANCHES, len(cats), p=self.branch_p)
        )
        self.phys_ids, self.online_ids = (
            np.flatnonzero(~self.merch_online),
            np.flatnonzero(self.merch_online),
        )
        self.phys_cdf = np.cumsum(pop[self.phys_ids]) / pop[self.phys_ids].sum()
        self.online_cdf = np.cumsum(pop[self.online_ids]) / pop[self.online_ids].sum()
        names = [_CATEGORIES[c][0] for c in cats]
        self.high_value_merchants = np.array(
            [m for m in self.online_ids if names[m] in _HIGH_VALUE]
        )
        self.test_merchants = self.online_ids
        w = np.array([3.0 if names[m] in _TESTING_FRIENDLY else 1.0 for m in self.online_ids])
        self.test_weights = w / w.sum()
        # Terminals: 1-4 POS per shop, then three ATMs per branch.
        n_term = np.where(
            self.merch_online, 0, 1 + _pick(rng, np.tile([0.5, 0.3, 0.15, 0.05], (len(cats), 1)))
        )
        self.term_start = np.concatenate([[0], np.cumsum(n_term)[:-1]])
        self.term_n = n_term
        n_pos = int(n_term.sum())
        self.term_merchant = np.concatenate(
            [np.repeat(np.arange(len(cats)), n_term), np.full(3 * N_BRANCHES, -1)]
        )
        self.term_branch = np.concatenate(
            [self.merch_branch[self.term_merchant[:n_pos]], np.repeat(np.arange(N_BRANCHES), 3)]
        )
        self.n_terminals = len(self.term_merchant)
        self.pos_terminals = np.arange(n_pos)
        self.atm_by_branch = (n_pos + np.arange(3 * N_BRANCHES)).reshape(N_BRANCHES, 3)
        self._favourites(rng, pop)

    def _favourites(self, rng: Rng, pop: Arr) -> None:
        self.fav_phys = np.zeros((self.n, 15), dtype=np.int64)
        for b in range(N_BRANCHES):
            local = self.phys_ids[self.merch_branch[self.phys_ids] == b]
            local = local if len(local) else self.phys_ids
            who = np.flatnonzero(self.branch == b)
            self.fav_phys[who] = rng.choice(local, (len(who), 15), p=pop[local] / pop[local].sum())
        self.fav_phys_n = np.minimum(15, 3 + rng.poisson(5, self.n))
        p_online = pop[self.online_ids] / pop[self.online_ids].sum()
        self.fav_online = rng.choice(self.online_ids, (self.n, 8), p=p_online)
        self.fav_online_n = np.minimum(8, 2 + rng.poisson(3, self.n))

    def _payees(self, rng: Rng) -> None:
        pre = np.where(self.sme, 3 + rng.poisson(4, self.n), 1 + rng.poisson(1.0, self.n))
        new = rng.poisson(np.where(self.sme, 1.0, 0.5) * self.days / 90)
        self.pay_n = np.minimum(pre + new, 12)
        self.pay_start = np.concatenate([[0], np.cumsum(self.pay_n)[:-1]])
        cust = np.repeat(np.arange(self.n), self.pay_n)
        k = np.arange(len(cust)) - self.pay_start[cust]
        created = np.where(
            k < pre[cust],
            -rng.integers(30, 2000, len(cust)) * DAY,
            (rng.uniform(0.01, 0.97, len(cust)) * self.end).astype(np.int64),
        )
        created = created[np.lexsort((created, cust))]  # per customer: pre-existing payees first
        sme = self.sme[cust]
        person = rng.random(len(cust)) < np.where(sme, 0.2, 0.55)
        # Rent/landlord: the first payee of most working-age retail customers, paid monthly.
        self.rent_payee = np.where(
            ~self.sme & (self.age <= 2) & (rng.random(self.n) < 0.55), self.pay_start, -1
        )
        person[self.rent_payee[self.rent_payee >= 0]] = False
        median = np.where(sme, np.where(person, 250_000, 120_000), np.where(person, 6_000, 12_000))
        sigma = np.where(sme & person, 0.3, np.where(sme, 1.0, 0.85))
        internal = person & ~sme & (rng.random(len(cust)) < 0.15)
        other = self.cur_acct[rng.integers(0, self.n, len(cust))]
        n_acc = len(self.acct_ids)
        cpty = np.where(internal & (self.acct_cust[other] != cust), other, -1)
        ext = np.flatnonzero(cpty < 0)
        cpty[ext] = n_acc + np.arange(len(ext))
        self.ext_ids = [f"EXT{i:08d}" for i in range(len(ext))]
        self.pay_cust: list[int] = cust.tolist()
        self.pay_kind: list[str] = np.where(person, "person", "business").tolist()
        self.pay_cpty: list[int] = cpty.tolist()
        self.pay_created: list[int] = created.tolist()
        self.pay_typical = (median * rng.lognormal(0, sigma)).astype(np.int64)
        self.pay_created_np, self.pay_cpty_np = created, cpty

    # --- services used by activity and typologies -------------------------------------------------
    def new_external(self) -> int:
        self.ext_ids.append(f"EXT{len(self.ext_ids):08d}")
        return len(self.acct_ids) + len(self.ext_ids) - 1

    def new_payee(self, cust: int, t: int, cpty: int, kind: str) -> int:
        for column, value in ((self.pay_cust, cust), (self.pay_created, t), (self.pay_cpty, cpty)):
            column.append(value)
        self.pay_kind.append(kind)
        return len(self.pay_cust) - 1

    def new_device(self, cust: int, t: int, rng: Rng) -> int:
        mobile = bool(rng.random() < 0.7)
        models = _MOBILE_MODELS if mobile else _DESKTOP_MODELS
        self.dev_cust.append(cust)
        self.dev_mobile.append(mobile)
        self.dev_active.append(t)
        self.dev_model.append(models[int(rng.integers(len(models)))])
        return len(self.dev_cust) - 1

    def fraud_ip(self, rng: Rng, fresh: bool = False) -> int:
        """A hosting/VPN address (shared between cases) or a fresh foreign residential one."""
        if not fresh and rng.random() < 0.6:
            return int(rng.choice(self.hosting_pool))
        self._foreign += 1
        k = self._foreign % 508
        ip = f"203.0.113.{k + 1}" if k < 254 else f"192.0.2.{k - 253}"
        return self._add_ip(ip, "residential", "foreign")

    def random_atm(self, rng: Rng) -> int:
        return int(rng.choice(self.atm_by_branch.ravel()))

    def login_method(self, dev: int, rng: Rng) -> str:
        return str(self.login_methods(np.array([dev]), rng)[0])

    def login_methods(self, dev: Arr, rng: Rng) -> Arr:
        mobile = np.array(self.dev_mobile)[dev]
        u = rng.random(len(dev))
        return np.where(
            mobile,
            np.where(u < 0.8, "biometric", "password"),
            np.where(u < 0.85, "password", "otp"),
        ).astype(object)

    def context(self, rng: Rng, cust: Arr, t: Arr) -> tuple[Arr, Arr]:
        """The device and IP of a legitimate session: mostly the primary phone and home network."""
        k = len(cust)
        dev = _pick_in(rng, self.dev_start[cust], self.dev_n[cust], 1.7)
        dev = np.where(self.dev_active_np[dev] <= t, dev, self.dev_start[cust])
        home = _pick_in(rng, self.home_start[cust], self.home_n[cust], 2.0)
        mobile_ip = self.mobile_pool[
            self.carrier[cust], rng.integers(0, self.mobile_pool.shape[1], k)
        ]
        u = rng.random(k)
        ip = np.where(self.dev_mobile_np[dev] & (u < 0.5), mobile_ip, home)
        ip = np.where(u > 0.96, self.wifi_pool[rng.integers(0, len(self.wifi_pool), k)], ip)
        vpn = self.vpn_user[cust] & (rng.random(k) < 0.3)
        return dev, np.where(vpn, self.hosting_pool[rng.integers(0, len(self.hosting_pool), k)], ip)

    def customer_id(self, c: int) -> str:
        return f"C{c:06d}"

    def account_id(self, a: int) -> str:
        return self.acct_ids[a]

    def device_id(self, d: int) -> str:
        return f"D{d:07d}"

    def payee_id(self, p: int) -> str:
        return f"P{p:07d}"

    def terminal_id(self, t: int) -> str:
        return f"T{t:06d}"

    def merchant_id(self, m: int) -> str:
        return f"M{m:06d}"


# --- legitimate activity ---
def _daily_counts(pop: Population, start: datetime, rate: Arr, rng: Rng) -> tuple[Arr, Arr]:
    """Poisson counts per customer-day with weekly seasonality; returns (customer, day) per item."""
    dow = (start.weekday() + np.arange(pop.days)) % 7
    factor = np.where(pop.sme[:, None], _DOW[True][dow][None, :], _DOW[False][dow][None, :])
    flat = np.repeat(np.arange(pop.n * pop.days), rng.poisson(rate[:, None] * factor).ravel())
    return flat // pop.days, flat % pop.days


def _times(rng: Rng, day: Arr, profile: Arr, sme: Arr) -> Arr:
    """Timestamps with the hour-of-day profile (rows of ``profile`` chosen per item)."""
    weights = profile * np.where(sme[:, None], _SME_HOURS[None, :], 1.0)
    hour = _pick(rng, weights)
    t: Arr = day * DAY + hour * HOUR + (rng.random(len(day)) * HOUR).astype(np.int64)
    return t


def _discretionary(
    pop: Population, start: datetime, rng: Rng, ledger: Ledger, ev: EventLog
) -> None:
    cust, day = _daily_counts(pop, start, pop.tx_rate, rng)
    n = len(cust)
    channel = _pick(rng, pop.mix[cust])
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
    cols["terminal"][cp] = _pick_in(rng, pop.term_start[merchant[cp]], pop.term_n[merchant[cp]])
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
    payee = _pick_in(rng, pop.pay_start[cust[pay]], pop.pay_n[cust[pay]], 1.5)
    payee = np.where(pop.pay_created_np[payee] <= t[pay], payee, pop.pay_start[cust[pay]])
    cols["payee"][pay], cols["cpty"][pay] = payee, pop.pay_cpty_np[payee]
    cents[pay] = (pop.pay_typical[payee] * rng.lognormal(0, 0.35, len(pay))).astype(np.int64)
    _online_session(pop, rng, ev, cols, pay, cust, t)
    ledger.add(t=t, cust=cust, acct=acct, cents=cents, channel=channel, direction=DEBIT, **cols)


def _online_session(
    pop: Population, rng: Rng, ev: EventLog, cols: dict[str, Arr], rows: Arr, cust: Arr, t: Arr
) -> None:
    """Customer-initiated payments come from a logged-in device, a minute or two after login."""
    dev, ip = pop.context(rng, cust[rows], t[rows])
    cols["device"][rows], cols["ip"][rows] = dev, ip
    login_t = t[rows] - rng.integers(20 * SEC, 4 * MIN, len(rows))
    _login(ev, login_t, cust[rows], dev, ip, pop.login_methods(dev, rng))


def _login(
    ev: EventLog, t: Arr, cust: Arr, dev: Arr, ip: Arr, method: Arr | str, ok: bool = True
) -> None:
    ev.add_batch("login", t, customer_id=cust, device_id=dev, ip=ip, success=ok, method=method)


def _new_payees(pop: Population, rng: Rng, ledger: Ledger, ev: EventLog) -> None:
    """Payees added during the period: login, payee_add, and usually a first payment soon after."""
    created = pop.pay_created_np
    rows = np.flatnonzero((created >= 0) & (created < pop.end))
    cust = np.array(pop.pay_cust)[rows]
    dev, ip = pop.context(rng, cust, created[rows])
    login_t = created[rows] - rng.integers(30 * SEC, 3 * MIN, len(rows))
    _login(ev, login_t, cust, dev, ip, pop.login_methods(dev, rng))
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


def _month_days(start: datetime, days: int, dom: int, backwards: bool) -> list[int]:
    """Day index of day-of-month ``dom`` in each month, moved off weekends like a bank would."""
    first, out = start.date(), []
    for d in range(days):
        if (first + timedelta(days=d)).day != dom:
            continue
        moved = d
        while (first + timedelta(days=moved)).weekday() >= 5:
            moved += -1 if backwards else 1
        if 0 <= moved < days:
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


def _recurring(pop: Population, start: datetime, rng: Rng, ledger: Ledger) -> None:
    """Rent, income (sized to each customer's spending), savings sweeps and card repayments."""
    days = pop.days
    renters = np.flatnonzero(pop.rent_payee >= 0)
    rent = (pop.income_cents[renters] * rng.uniform(0.25, 0.4, len(renters))).astype(np.int64)
    rent_payees = pop.rent_payee[renters]
    _standing_orders(
        pop,
        rng,
        ledger,
        renters,
        _month_days(start, days, 1, False),
        rent,
        pop.pay_cpty_np[rent_payees],
        rent_payees,
    )
    frame = ledger.frame()
    months = max(days / 30.44, 1.0)
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
        pop, rng, ledger, savers, _month_days(start, days, 26, True), sweep, pop.sav_acct[savers]
    )
    _card_repayments(pop, start, rng, ledger, frame)
    _income(pop, start, rng, ledger, income)


def _card_repayments(
    pop: Population, start: datetime, rng: Rng, ledger: Ledger, frame: dict[str, Arr]
) -> None:
    """On the 5th the current account pays off the previous month's credit-card spending."""
    month_of_day = np.array([(start.date() + timedelta(days=d)).month for d in range(pop.days)])
    cc_rows = np.flatnonzero(pop.is_cc_acct[frame["acct"]])
    holders = np.flatnonzero(pop.cc_acct >= 0)
    for d in _month_days(start, pop.days, 5, False):
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


def _income(pop: Population, start: datetime, rng: Rng, ledger: Ledger, income: Arr) -> None:
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
        for d in _month_days(start, pop.days, 1 if pensions else 25, not pensions):
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
    cust, day = _daily_counts(pop, start, rate, rng)
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


def _sessions(pop: Population, start: datetime, rng: Rng, ev: EventLog) -> None:
    """Browsing sessions (login + app events), device binds on first use, profile changes."""
    cust, day = _daily_counts(pop, start, pop.session_rate, rng)
    t = _times(rng, day, np.broadcast_to(_HOURS[_SESSION], (len(day), 24)), pop.sme[cust])
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
    new = np.flatnonzero((active >= 0) & (active < pop.end))
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
    when = _times(
        rng,
        rng.integers(0, pop.days, len(who)),
        np.broadcast_to(_HOURS[_SESSION], (len(who), 24)),
        pop.sme[who],
    )
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


# --- assembly ---
def generate(
    config: BankConfig = BankConfig(), progress: Callable[[int, int], None] | None = None
) -> DemoBank:
    """Build the whole bank in memory; ``progress(done, total)`` is called after each stage."""
    if config.start.tzinfo is None:
        raise ValueError("BankConfig.start must be timezone-aware (UTC)")
    if config.customers < 1 or config.days < 1:
        raise ValueError("BankConfig needs at least one customer and one day")
    steps = 5

    def tick(done: int) -> None:
        if progress is not None:
            progress(done, steps)

    rng_pop, rng_tx, rng_sessions, rng_fraud = np.random.default_rng(config.seed).spawn(4)
    pop = Population(config, rng_pop)
    tick(1)
    ledger, log = Ledger(), EventLog()
    _discretionary(pop, config.start, rng_tx, ledger, log)
    _new_payees(pop, rng_tx, ledger, log)
    _recurring(pop, config.start, rng_tx, ledger)
    _mirror_internal(pop, rng_tx, ledger)
    _sessions(pop, config.start, rng_sessions, log)
    tick(2)
    inject_fraud(pop, ledger, log, config.fraud_rates, rng_fraud)
    tick(3)
    ledger.keep((ledger.frame()["t"] >= 0) & (ledger.frame()["t"] < pop.end))
    frame = ledger.frame()
    before, closing = balances_before(frame, pop.opening)
    gc_was_on = gc.isenabled()
    gc.disable()  # many fresh dicts: cyclic GC passes would slow the build and find nothing
    try:
        events, truth = _assemble(pop, frame, before, log)
        tick(4)
        bank = DemoBank(config, *_tables(pop, closing), events, truth)
    finally:
        if gc_was_on:
            gc.enable()
    tick(5)
    return bank


Rows = list[dict[str, Any]]
_Tables = tuple[Rows, Rows, Rows, Rows, Rows, Rows, Rows]
Batch = tuple[str, Arr, dict[str, Arr], Arr | None]  # kind, times, raw columns, labelled tx rows


def _assemble(
    pop: Population, frame: dict[str, Arr], before: Arr, log: EventLog
) -> tuple[list[Event], list[dict[str, Any]]]:
    fraud = np.flatnonzero(frame["typ"] >= 0)
    labelled = fraud[frame["label_at"][fraud] < pop.end]  # later labels exist only in the truth
    n_lab = len(labelled)
    label_cols = {
        "entity_type": np.full(n_lab, "event", dtype=object),
        "entity_id": np.full(n_lab, "", dtype=object),  # filled with ids once they exist
        "label": np.full(n_lab, "fraud", dtype=object),
        "typology": np.array(TYPOLOGIES, dtype=object)[frame["typ"][labelled]],
        "source": np.array(SOURCES, dtype=object)[frame["label_src"][labelled]],
    }
    batches: list[Batch] = [
        ("transaction", frame["t"], _transaction_columns(frame, before), None),
        ("label", frame["label_at"][labelled], label_cols, labelled),
    ]
    for kind, t, cols in log.flush(_ID_FIELDS):
        keep = (t >= 0) & (t < pop.end)
        batches.append((kind, t[keep], {k: v[keep] for k, v in cols.items()}, None))
    times = np.concatenate([b[1] for b in batches])
    order = np.argsort(times, kind="stable")  # ties keep creation order (login before payment)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    ids = np.array([f"evt_{i:09d}" for i in range(len(order))], dtype=object)
    stamps = _iso(pop.start, times[order])
    tables = _id_tables(pop)
    out = np.empty(len(order), dtype=object)
    offset = 0
    for kind, t, cols, refs in batches:
        r = rank[offset : offset + len(t)]
        wire = {"event_id": ids[r], "type": np.full(len(t), kind, dtype=object)}
        wire["occurred_at"] = stamps[r]
        absent: dict[str, Arr] = {}
        for name, col in cols.items():
            wire[name], mask = _wire_values(name, col, tables)
            if mask is not None and mask.any():
                absent[name] = mask
        if refs is not None:
            wire["entity_id"] = ids[rank[refs]]
            wire["refers_to_event_id"] = wire["entity_id"]
        _emit(out, r, wire, absent)
        offset += len(t)
    events: list[Event] = out.tolist()
    return events, _truth(pop, frame, fraud, ids[rank[fraud]], stamps[rank[fraud]])


def _transaction_columns(frame: dict[str, Arr], before: Arr) -> dict[str, Arr]:
    n = len(frame["t"])
    return {
        "customer_id": frame["cust"],
        "account_id": frame["acct"],
        "amount": frame["cents"],
        "currency": np.full(n, "EUR", dtype=object),
        "channel": np.array(CHANNELS, dtype=object)[frame["channel"]],
        "direction": np.array(DIRECTIONS, dtype=object)[frame["direction"]],
        "device_id": frame["device"],
        "ip": frame["ip"],
        "merchant_id": frame["merchant"],
        "terminal_id": frame["terminal"],
        "mcc": frame["mcc"],
        "payee_id": frame["payee"],
        "counterparty_account_id": frame["cpty"],
        "balance_before": before,
    }


def _id_tables(pop: Population) -> dict[str, Arr]:
    def table(ids: Iterable[str]) -> Arr:
        return np.array(list(ids), dtype=object)

    return {
        "customer_id": table(pop.customer_id(c) for c in range(pop.n)),
        "account_id": table(pop.acct_ids),
        "device_id": table(pop.device_id(d) for d in range(len(pop.dev_cust))),
        "ip": table(pop.ip_str),
        "merchant_id": table(pop.merchant_id(m) for m in range(len(pop.merch_cat))),
        "terminal_id": table(pop.terminal_id(t) for t in range(pop.n_terminals)),
        "payee_id": table(pop.payee_id(p) for p in range(len(pop.pay_cust))),
        "counterparty_account_id": table(pop.acct_ids + pop.ext_ids),
    }


def _wire_values(name: str, col: Arr, tables: dict[str, Arr]) -> tuple[Arr, Arr | None]:
    """Raw column -> (object array of wire values, mask of rows where the field is absent)."""
    if name in _ID_FIELDS and col.dtype != object:
        return tables[name][np.maximum(col, 0)], col < 0
    if name in _MONEY_FIELDS:
        return (col / 100).astype(object), col == MISSING
    if name == "mcc":
        return np.array([f"{v:04d}" for v in range(10_000)], dtype=object)[col], col < 0
    values = col if col.dtype == object else col.astype(object)
    # Only these object fields are optional; comparing every column with None would be slow.
    return values, (values == None) if name in _OPTIONAL_TEXT else None  # noqa: E711


def _emit(out: Arr, positions: Arr, wire: dict[str, Arr], absent: dict[str, Arr]) -> None:
    """One dict per row; rows are grouped by which optional fields they carry so that each group
    is built by C-level ``dict(zip(...))`` (dict creation dominates the build time)."""
    names = list(wire)
    code = np.zeros(len(positions), dtype=np.int64)
    for i, k in enumerate(names):
        if k in absent:
            code |= absent[k].astype(np.int64) << i
    for c in np.unique(code).tolist():
        rows = np.flatnonzero(code == c)
        keep = [k for i, k in enumerate(names) if not (c >> i) & 1]
        values = zip(*[wire[k][rows].tolist() for k in keep], strict=True)
        out[positions[rows]] = list(map(dict, map(partial(zip, keep), values)))


def _iso(start: datetime, t: Arr) -> Arr:
    """ISO-8601 UTC with microseconds, as ``datetime.isoformat(timespec="microseconds")``."""
    epoch_us = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    stamps = pl.Series(t + epoch_us, dtype=pl.Int64).cast(pl.Datetime("us"))
    text = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%6f+00:00").to_list()
    return np.array(text, dtype=object)


def _truth(
    pop: Population, frame: dict[str, Arr], fraud: Arr, event_ids: Arr, stamps: Arr
) -> list[dict[str, Any]]:
    order = np.argsort(event_ids.astype(str), kind="stable")  # ids follow time order
    label_at = _iso(pop.start, frame["label_at"][fraud])
    return [
        {
            "event_id": event_ids[i],
            "typology": TYPOLOGIES[int(frame["typ"][fraud[i]])],
            "customer_id": pop.customer_id(int(frame["cust"][fraud[i]])),
            "account_id": pop.account_id(int(frame["acct"][fraud[i]])),
            "occurred_at": stamps[i],
            "label_available_at": label_at[i],
        }
        for i in order.tolist()
    ]


def _tables(pop: Population, closing: Arr) -> _Tables:
    branch = [f"BR{b + 1:02d}" for b in range(N_BRANCHES)]
    customers = [
        {
            "customer_id": pop.customer_id(c),
            "segment": "sme" if pop.sme[c] else "retail",
            "age_band": AGE_BANDS[pop.age[c]],
            "income_band": INCOME_BANDS[pop.income[c]],
            "tenure_years": float(pop.tenure[c]),
            "branch": branch[pop.branch[c]],
            "products": pop.products[c],
        }
        for c in range(pop.n)
    ]
    accounts = [
        {
            "account_id": pop.acct_ids[a],
            "customer_id": pop.customer_id(int(pop.acct_cust[a])),
            "kind": pop.acct_kind[a],
            "opened_at": pop.acct_opened[a],
            "balance": int(closing[a]) / 100,
        }
        for a in range(len(pop.acct_ids))
    ]
    seen = _iso(pop.start, np.array(pop.dev_active, dtype=np.int64))
    devices = [
        {
            "device_id": pop.device_id(d),
            "customer_id": pop.customer_id(c),
            "kind": "mobile" if pop.dev_mobile[d] else "desktop",
            "model": pop.dev_model[d],
            "first_seen_at": seen[d],
        }
        for d, c in enumerate(pop.dev_cust)
    ]
    ips = [
        {"ip": ip, "kind": kind, "geo": geo}
        for ip, kind, geo in zip(pop.ip_str, pop.ip_kind, pop.ip_geo, strict=True)
    ]
    merchants = [
        {
            "merchant_id": pop.merchant_id(m),
            "name": f"{_CATEGORIES[cat][0].replace('_', ' ').title()} {m}",
            "category": _CATEGORIES[cat][0],
            "mcc": f"{_CATEGORIES[cat][1]:04d}",
            "channel": "online" if pop.merch_online[m] else "physical",
            "branch": None if pop.merch_online[m] else branch[pop.merch_branch[m]],
        }
        for m, cat in enumerate(pop.merch_cat.tolist())
    ]
    terminals = [
        {
            "terminal_id": pop.terminal_id(t),
            "merchant_id": pop.merchant_id(m) if m >= 0 else None,
            "kind": "pos" if m >= 0 else "atm",
            "branch": branch[pop.term_branch[t]],
        }
        for t, m in enumerate(pop.term_merchant.tolist())
    ]
    created = _iso(pop.start, np.array(pop.pay_created, dtype=np.int64))
    cpty = pop.acct_ids + pop.ext_ids
    payees = [
        {
            "payee_id": pop.payee_id(p),
            "customer_id": pop.customer_id(c),
            "kind": pop.pay_kind[p],
            "counterparty_account_id": cpty[pop.pay_cpty[p]],
            "created_at": created[p],
        }
        for p, c in enumerate(pop.pay_cust)
    ]
    return customers, accounts, devices, ips, merchants, terminals, payees


# --- files ---
def write(bank: DemoBank, directory: Path) -> dict[str, Path]:
    """Write events.jsonl (one event per line, in order), truth.csv, entity CSVs, manifest.json."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"events": directory / "events.jsonl"}
    line = partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)  # compact UTF-8 JSON
    with paths["events"].open("wb") as fh:
        for i in range(0, len(bank.events), 50_000):
            fh.write(b"".join(map(line, bank.events[i : i + 50_000])))
    truth_cols = [
        "event_id",
        "typology",
        "customer_id",
        "account_id",
        "occurred_at",
        "label_available_at",
    ]
    tables = {
        "truth": (bank.truth, truth_cols),
        "customers": (bank.customers, None),
        "accounts": (bank.accounts, None),
        "devices": (bank.devices, None),
        "ips": (bank.ips, None),
        "merchants": (bank.merchants, None),
        "terminals": (bank.terminals, None),
        "payees": (bank.payees, None),
    }
    for name, (rows, columns) in tables.items():
        paths[name] = directory / f"{name}.csv"
        header = columns if columns is not None else list(rows[0]) if rows else []
        _write_csv(paths[name], rows, header)
    paths["manifest"] = directory / "manifest.json"
    paths["manifest"].write_text(json.dumps(_manifest(bank), indent=2) + "\n", encoding="utf-8")
    return paths


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Lists are joined with ';', absent values are empty cells."""

    def cell(value: Any) -> Any:
        if isinstance(value, list):
            return ";".join(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else value

    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([cell(row.get(c)) for c in columns] for row in rows)


def _manifest(bank: DemoBank) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for event in bank.events:
        counts[event["type"]] = counts.get(event["type"], 0) + 1
    by_typology: dict[str, int] = {}
    for row in bank.truth:
        by_typology[row["typology"]] = by_typology.get(row["typology"], 0) + 1
    cfg = bank.config
    return {
        "generator": "decisionloop.demo.bank",
        "seed": cfg.seed,
        "customers": cfg.customers,
        "days": cfg.days,
        "start": cfg.start.isoformat(),
        "declared_fraud_rates": cfg.fraud_rates.declared(),
        "events_by_type": dict(sorted(counts.items())),
        "fraudulent_transactions_by_typology": dict(sorted(by_typology.items())),
    }
