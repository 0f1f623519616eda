"""The demo bank's population: customers and their habits, accounts, devices, IP addresses, payees,
and the merchants and terminals they share.

Everything is an integer index into column arrays or lists; :mod:`decisionloop.demo.wire` turns
indices into wire ids. Lists that fraud injection appends to (devices, payees, IPs, external
accounts) are Python lists, the rest numpy arrays.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np

from decisionloop.demo.typologies import ATM, CO, CP, DAY, Arr, Rng

if TYPE_CHECKING:
    from decisionloop.demo.bank import BankConfig

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
CATEGORIES = (  # category, mcc, online, median EUR, sigma, share within physical/online
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
# fmt: on


def pick(rng: Rng, probs: Arr) -> Arr:
    """One categorical draw per row of ``probs`` (rows need not be normalised)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cdf[:, -1]
    picked: Arr = np.minimum((u[:, None] > cdf).sum(axis=1), probs.shape[1] - 1)
    return picked


def pick_in(rng: Rng, start: Arr, count: Arr, skew: float = 1.0) -> Arr:
    """An index in [start, start + count); skew > 1 favours the first items (favourites)."""
    return start + (count * rng.random(len(start)) ** skew).astype(np.int64)


def _starts(counts: Arr) -> Arr:
    """Index of each owner's first item when items are stored owner by owner."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]])


def _model(rng: Rng, mobile: bool) -> str:
    models = _MOBILE_MODELS if mobile else _DESKTOP_MODELS
    return models[int(rng.integers(len(models)))]


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
        self.income = pick(rng, _INCOME_P[np.where(self.sme, 5, self.age)])
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
        first = _starts(n_acc)
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
        self.dev_n = 1 + pick(rng, _DEVICES_P[np.where(self.sme, 5, self.age)])
        self.dev_start = _starts(self.dev_n)
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
        self.dev_cust: list[int] = cust.tolist()
        self.dev_mobile: list[bool] = mobile.tolist()
        self.dev_active: list[int] = active.tolist()
        self.dev_model: list[str] = [_model(rng, m) for m in mobile.tolist()]
        self.dev_active_np, self.dev_mobile_np = active, mobile

    def _networks(self, rng: Rng) -> None:
        self.ip_str: list[str] = []
        self.ip_kind: list[str] = []
        self.ip_geo: list[str] = []
        self._ip_index: dict[str, int] = {}
        self.home_n = 1 + pick(rng, np.tile([0.55, 0.35, 0.10], (self.n, 1)))
        self.home_start = _starts(self.home_n)
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
        online = np.array([c[2] for c in CATEGORIES])
        share = np.array([c[5] for c in CATEGORIES])
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
        self.merch_mcc = np.array([CATEGORIES[c][1] for c in cats])
        self.merch_logmed = np.log([CATEGORIES[c][3] for c in cats]) + rng.normal(0, 0.2, len(cats))
        self.merch_sigma = np.array([CATEGORIES[c][4] for c in cats])
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
        names = [CATEGORIES[c][0] for c in cats]
        self.high_value_merchants = np.array(
            [m for m in self.online_ids if names[m] in _HIGH_VALUE]
        )
        self.test_merchants = self.online_ids
        w = np.array([3.0 if names[m] in _TESTING_FRIENDLY else 1.0 for m in self.online_ids])
        self.test_weights = w / w.sum()
        # Terminals: 1-4 POS per shop, then three ATMs per branch.
        n_term = np.where(
            self.merch_online, 0, 1 + pick(rng, np.tile([0.5, 0.3, 0.15, 0.05], (len(cats), 1)))
        )
        self.term_start = _starts(n_term)
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
        self.pay_start = _starts(self.pay_n)
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
        self.dev_cust.append(cust)
        self.dev_mobile.append(mobile)
        self.dev_active.append(t)
        self.dev_model.append(_model(rng, mobile))
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
        dev = pick_in(rng, self.dev_start[cust], self.dev_n[cust], 1.7)
        dev = np.where(self.dev_active_np[dev] <= t, dev, self.dev_start[cust])
        home = pick_in(rng, self.home_start[cust], self.home_n[cust], 2.0)
        mobile_ip = self.mobile_pool[
            self.carrier[cust], rng.integers(0, self.mobile_pool.shape[1], k)
        ]
        u = rng.random(k)
        ip = np.where(self.dev_mobile_np[dev] & (u < 0.5), mobile_ip, home)
        ip = np.where(u > 0.96, self.wifi_pool[rng.integers(0, len(self.wifi_pool), k)], ip)
        vpn = self.vpn_user[cust] & (rng.random(k) < 0.3)
        return dev, np.where(vpn, self.hosting_pool[rng.integers(0, len(self.hosting_pool), k)], ip)

    def in_period(self, t: Arr) -> Arr:
        return (t >= 0) & (t < self.end)

    def counterparty_ids(self) -> list[str]:
        """Wire ids of ``cpty`` indices: this bank's accounts, then external ones."""
        return self.acct_ids + self.ext_ids

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
