"""The synthetic demo bank: wire format, determinism, ground truth and realism of the typologies."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from decisionloop.demo.bank import BankConfig, DemoBank, FraudRates, generate, write

SMALL = BankConfig(customers=300, days=30)
# Five times the default rates, so that 400 customers give enough cases for rate tests to bite.
BOOSTED = BankConfig(
    seed=11,
    customers=400,
    days=30,
    fraud_rates=FraudRates(
        account_takeover=0.04,
        card_testing=0.075,
        compromised_terminal=0.1,
        skim_share=0.3,
        money_mule=0.025,
        app_scam=0.04,
    ),
)
TYPOLOGIES = {"account_takeover", "card_testing", "compromised_terminal", "money_mule", "app_scam"}
ELDERLY = {"61-75", "75+"}

# --- wire format: field -> check, per event type (required, optional) ---
Check = Any  # a Python type, a set of allowed strings, or a compiled regex


def _ids(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{prefix}\d+(-\d+)?")


CUSTOMER, ACCOUNT, DEVICE = _ids("C"), _ids("A"), _ids("D")
MERCHANT, TERMINAL, PAYEE = _ids("M"), _ids("T"), _ids("P")
IP = re.compile(r"(\d{1,3}\.){3}\d{1,3}")
CHANNELS = {"card_present", "card_online", "transfer", "instant_payment", "atm"}
ENTITY_TYPES = {"event", "customer", "account", "device", "ip", "merchant", "terminal", "payee"}
WIRE: dict[str, tuple[dict[str, Check], dict[str, Check]]] = {
    "transaction": (
        {
            "customer_id": CUSTOMER,
            "account_id": ACCOUNT,
            "amount": float,
            "currency": {"EUR"},
            "channel": CHANNELS,
            "direction": {"debit", "credit"},
        },
        {
            "device_id": DEVICE,
            "ip": IP,
            "merchant_id": MERCHANT,
            "terminal_id": TERMINAL,
            "mcc": re.compile(r"\d{4}"),
            "payee_id": PAYEE,
            "counterparty_account_id": str,
            "balance_before": float,
        },
    ),
    "login": (
        {
            "customer_id": CUSTOMER,
            "device_id": DEVICE,
            "ip": IP,
            "success": bool,
            "method": {"password", "biometric", "otp"},
        },
        {},
    ),
    "device_bind": (
        {"customer_id": CUSTOMER, "device_id": DEVICE, "ip": IP},
        {"device_model": str},
    ),
    "payee_add": (
        {"customer_id": CUSTOMER, "account_id": ACCOUNT, "payee_id": PAYEE},
        {"device_id": DEVICE, "ip": IP},
    ),
    "profile_change": (
        {"customer_id": CUSTOMER, "field": {"phone", "email", "address", "password"}},
        {"device_id": DEVICE, "ip": IP},
    ),
    "app_event": ({"customer_id": CUSTOMER, "device_id": DEVICE, "action": str}, {"ip": IP}),
    "label": (
        {"entity_type": ENTITY_TYPES, "entity_id": str, "label": str, "source": str},
        {"typology": str, "refers_to_event_id": str},
    ),
}
KEYS = {
    "customer": "customer_id",
    "account": "account_id",
    "device": "device_id",
    "ip": "ip",
    "merchant": "merchant_id",
    "terminal": "terminal_id",
    "payee": "payee_id",
}
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


def _check(value: Any, check: Check) -> bool:
    if isinstance(check, type):
        return type(value) is check  # exact: a bool is not a number, an int is not a float
    if isinstance(check, re.Pattern):
        return type(value) is str and check.fullmatch(value) is not None
    return type(value) is str and value in check


@pytest.fixture(scope="module")
def small() -> DemoBank:
    return generate(SMALL)


@pytest.fixture(scope="module")
def boosted() -> DemoBank:
    return generate(BOOSTED)


def _digest(bank: DemoBank, directory: Path) -> str:
    return hashlib.sha256(write(bank, directory)["events"].read_bytes()).hexdigest()


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _end(bank: DemoBank) -> datetime:
    return bank.config.start + timedelta(days=bank.config.days)


def _transactions(bank: DemoBank) -> list[dict[str, Any]]:
    return [e for e in bank.events if e["type"] == "transaction"]


def _victims(bank: DemoBank, typology: str) -> set[str]:
    return {r["customer_id"] for r in bank.truth if r["typology"] == typology}


def _within_binomial(hits: int, n: int, p: float) -> bool:
    """Four standard deviations, plus one for the generator's at-least-one-case floor."""
    return abs(hits - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1


# --- determinism and files ---
def test_same_seed_gives_identical_files_and_other_seed_differs(
    small: DemoBank, tmp_path: Path
) -> None:
    again = generate(SMALL)
    assert _digest(small, tmp_path / "a") == _digest(again, tmp_path / "b")
    assert small.truth == again.truth
    other = generate(replace(SMALL, seed=SMALL.seed + 1))
    assert _digest(other, tmp_path / "c") != _digest(small, tmp_path / "a")


def test_write_round_trips_events_and_truth(small: DemoBank, tmp_path: Path) -> None:
    paths = write(small, tmp_path)
    lines = paths["events"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(small.events)
    assert [json.loads(line) for line in lines[:500]] == small.events[:500]
    with paths["truth"].open(encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == small.truth
    for name in ("customers", "accounts", "devices", "ips", "merchants", "terminals", "payees"):
        with paths[name].open(encoding="utf-8") as fh:
            assert sum(1 for _ in csv.DictReader(fh)) == len(getattr(small, name))
    manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    assert manifest["declared_fraud_rates"] == SMALL.fraud_rates.declared()


# --- wire format ---
def test_every_event_matches_the_wire_format(small: DemoBank) -> None:
    seen: Counter[str] = Counter()
    for event in small.events:
        kind = event["type"]
        assert kind in WIRE, event
        required, optional = WIRE[kind]
        assert type(event["event_id"]) is str
        assert STAMP.fullmatch(event["occurred_at"]), event
        assert (
            _time(event["occurred_at"]).isoformat(timespec="microseconds") == event["occurred_at"]
        )
        fields = set(event) - {"event_id", "type", "occurred_at"}
        assert set(required) <= fields, event
        assert fields <= set(required) | set(optional), event
        for name in fields:
            check = required.get(name, optional.get(name))
            assert _check(event[name], check), (name, event)  # None never passes a check
        if kind == "transaction":
            assert event["amount"] > 0
            assert round(event["amount"], 2) == event["amount"]
        seen[kind] += 1
    assert set(seen) == set(WIRE)


def test_entity_tables_cover_the_ids_used_by_events(small: DemoBank) -> None:
    known = {
        "customer_id": {c["customer_id"] for c in small.customers},
        "account_id": {a["account_id"] for a in small.accounts},
        "device_id": {d["device_id"] for d in small.devices},
        "ip": {i["ip"] for i in small.ips},
        "merchant_id": {m["merchant_id"] for m in small.merchants},
        "terminal_id": {t["terminal_id"] for t in small.terminals},
        "payee_id": {p["payee_id"] for p in small.payees},
    }
    for event in small.events:
        for name, ids in known.items():
            assert event.get(name, next(iter(ids))) in ids, (name, event)
        if event["type"] == "label" and event["entity_type"] != "event":
            assert event["entity_id"] in known[KEYS[event["entity_type"]]], event
    segments = Counter(c["segment"] for c in small.customers)
    assert 0.03 < segments["sme"] / len(small.customers) < 0.15
    per_customer = Counter(a["customer_id"] for a in small.accounts)
    assert set(per_customer.values()) <= {1, 2, 3}
    assert {len(c["products"]) > 0 for c in small.customers} == {True}


def test_balances_replay_exactly(small: DemoBank) -> None:
    balance: dict[str, float] = {}
    for tx in _transactions(small):
        account, before = tx["account_id"], tx["balance_before"]
        if account in balance:
            assert before == pytest.approx(balance[account], abs=0.005), tx
        sign = -1 if tx["direction"] == "debit" else 1
        balance[account] = before + sign * tx["amount"]
    closing = {a["account_id"]: a["balance"] for a in small.accounts}
    for account, value in balance.items():
        assert closing[account] == pytest.approx(value, abs=0.005)


# --- order, ids, truth, labels ---
def test_events_sorted_with_unique_ids(small: DemoBank) -> None:
    keys = [(e["occurred_at"], e["event_id"]) for e in small.events]
    assert keys == sorted(keys)
    assert len({e["event_id"] for e in small.events}) == len(small.events)
    end = _end(small)
    assert all(small.config.start <= _time(e["occurred_at"]) < end for e in small.events)


def test_truth_rows_point_at_transactions_and_labels_follow_events(small: DemoBank) -> None:
    by_id = {e["event_id"]: e for e in small.events}
    end = _end(small)
    labels = {e["refers_to_event_id"]: e for e in small.events if "refers_to_event_id" in e}
    for row in small.truth:
        event = by_id[row["event_id"]]
        assert event["type"] == "transaction"
        assert (event["customer_id"], event["account_id"], event["occurred_at"]) == (
            row["customer_id"],
            row["account_id"],
            row["occurred_at"],
        )
        assert row["typology"] in TYPOLOGIES
        assert _time(row["label_available_at"]) > _time(row["occurred_at"])
        label = labels.get(row["event_id"])
        if _time(row["label_available_at"]) < end:  # labels after the period exist only in truth
            assert label is not None
            assert label["occurred_at"] == row["label_available_at"]
            assert label["entity_id"] == row["event_id"]
            assert label["typology"] == row["typology"]
        else:
            assert label is None
    truth_ids = {r["event_id"] for r in small.truth}
    for event in small.events:
        if event["type"] == "label" and event["entity_type"] == "event":
            assert event["entity_id"] in truth_ids
            assert event["occurred_at"] > by_id[event["refers_to_event_id"]]["occurred_at"]


def test_label_delays_are_realistic(boosted: DemoBank) -> None:
    delays = defaultdict(list)
    for row in boosted.truth:
        delay = _time(row["label_available_at"]) - _time(row["occurred_at"])
        delays[row["typology"]].append(delay / timedelta(days=1))
    assert max(delays["account_takeover"] + delays["app_scam"]) <= 5.01
    assert min(delays["card_testing"]) >= 5
    assert max(delays["card_testing"]) <= 45.01
    assert max(delays["money_mule"]) <= 20.01


# --- declared vs measured rates ---
def test_every_typology_appears_at_default_rates(small: DemoBank) -> None:
    assert {r["typology"] for r in small.truth} == TYPOLOGIES


def test_measured_rates_match_declared_rates(boosted: DemoBank) -> None:
    declared = boosted.config.fraud_rates.declared()
    n = len(boosted.customers)
    for typology in ("account_takeover", "card_testing", "money_mule", "app_scam"):
        hits = len(_victims(boosted, typology))
        assert _within_binomial(hits, n, declared[typology]), (typology, hits, n)
    by_id = {e["event_id"]: e for e in boosted.events}
    skims = [by_id[r["event_id"]] for r in boosted.truth if r["typology"] == "compromised_terminal"]
    skimmed = {e["event_id"] for e in skims if e["channel"] == "card_present"}
    terminals = {by_id[i]["terminal_id"] for i in skimmed}
    pos = [t for t in boosted.terminals if t["kind"] == "pos"]
    assert _within_binomial(len(terminals), len(pos), declared["compromised_terminal"])
    # Between a terminal's first and last skim every card_present payment was skimmed
    # independently, so the interior share estimates the declared skim share.
    interior = hits = 0
    for terminal in terminals:
        at = [e for e in _transactions(boosted) if e.get("terminal_id") == terminal]
        flagged = [i for i, e in enumerate(at) if e["event_id"] in skimmed]
        for e in at[flagged[0] + 1 : flagged[-1]]:
            interior += 1
            hits += e["event_id"] in skimmed
    assert interior > 30
    assert _within_binomial(hits, interior, declared["skim_share"]), (hits, interior)


def test_overall_fraud_share_is_realistic(small: DemoBank, boosted: DemoBank) -> None:
    share = len(small.truth) / len(_transactions(small))
    assert 0.001 < share < 0.02  # 0.2-1% at the default size; small banks round cases up
    assert len(boosted.truth) > len(small.truth)


# --- typology mechanics ---
def _first_seen(bank: DemoBank, key: str) -> dict[tuple[str, str], str]:
    first: dict[tuple[str, str], str] = {}
    for e in bank.events:
        if key in e and "customer_id" in e and e["type"] != "label":
            first.setdefault((e["customer_id"], e[key]), e["occurred_at"])
    return first


def test_account_takeover_uses_new_device_new_payee_and_drains(boosted: DemoBank) -> None:
    devices, ips = _first_seen(boosted, "device_id"), _first_seen(boosted, "ip")
    payees = {e["payee_id"]: e for e in boosted.events if e["type"] == "payee_add"}
    by_id = {e["event_id"]: e for e in boosted.events}
    drained: dict[str, float] = defaultdict(float)
    start: dict[str, float] = {}
    for row in boosted.truth:
        if row["typology"] != "account_takeover":
            continue
        tx = by_id[row["event_id"]]
        key = (tx["customer_id"], tx["device_id"])
        assert _time(tx["occurred_at"]) - _time(devices[key]) < timedelta(hours=2)
        assert _time(tx["occurred_at"]) - _time(ips[(tx["customer_id"], tx["ip"])]) < timedelta(
            hours=2
        )
        assert payees[tx["payee_id"]]["occurred_at"] < tx["occurred_at"]
        assert tx["channel"] in {"transfer", "instant_payment"}
        assert tx["direction"] == "debit"
        start.setdefault(tx["account_id"], tx["balance_before"])
        drained[tx["account_id"]] += tx["amount"]
    assert drained
    for account, amount in drained.items():
        assert 0.6 * start[account] <= amount <= start[account] + 1


def test_card_testing_bursts_are_tiny_and_spread_over_merchants(boosted: DemoBank) -> None:
    by_id = {e["event_id"]: e for e in boosted.events}
    cases = defaultdict(list)
    for row in boosted.truth:
        if row["typology"] == "card_testing":
            cases[row["account_id"]].append(by_id[row["event_id"]])
    assert cases
    for events in cases.values():
        tiny = [e for e in events if e["amount"] <= 3]
        assert len(tiny) >= 5
        assert all(e["channel"] == "card_online" for e in events)
        assert len({e["merchant_id"] for e in tiny}) == len(tiny)
        span = _time(tiny[-1]["occurred_at"]) - _time(tiny[0]["occurred_at"])
        assert span < timedelta(minutes=30)


def test_mules_receive_from_many_senders_and_pay_out_fast(boosted: DemoBank) -> None:
    by_id = {e["event_id"]: e for e in boosted.events}
    flows = defaultdict(list)
    for row in boosted.truth:
        if row["typology"] == "money_mule":
            flows[row["account_id"]].append(by_id[row["event_id"]])
    assert flows
    for events in flows.values():
        credits = [e for e in events if e["direction"] == "credit"]
        debits = [e for e in events if e["direction"] == "debit"]
        assert len({e["counterparty_account_id"] for e in credits}) == len(credits) >= 3
        first_out = min(_time(e["occurred_at"]) for e in debits)
        assert first_out - _time(credits[0]["occurred_at"]) < timedelta(hours=6, minutes=1)


def test_app_scams_come_from_the_victims_usual_device_and_ip(boosted: DemoBank) -> None:
    devices, ips = _first_seen(boosted, "device_id"), _first_seen(boosted, "ip")
    by_id = {e["event_id"]: e for e in boosted.events}
    rows = [by_id[r["event_id"]] for r in boosted.truth if r["typology"] == "app_scam"]
    assert rows
    for tx in rows:
        assert devices[(tx["customer_id"], tx["device_id"])] < tx["occurred_at"]
        assert ips[(tx["customer_id"], tx["ip"])] < tx["occurred_at"]
        assert tx["channel"] in {"transfer", "instant_payment"}


# --- seasonality and skew ---
def test_night_is_quiet_and_takeovers_favour_the_night(boosted: DemoBank) -> None:
    fraud = {r["event_id"]: r["typology"] for r in boosted.truth}
    per_hour = Counter(int(e["occurred_at"][11:13]) for e in _transactions(boosted))
    night = sum(per_hour[h] for h in range(6)) / 6
    midday = sum(per_hour[h] for h in range(11, 15)) / 4
    assert night < 0.2 * midday

    def night_share(events: list[dict[str, Any]]) -> float:
        return sum(int(e["occurred_at"][11:13]) < 6 for e in events) / len(events)

    legit = [e for e in _transactions(boosted) if e["event_id"] not in fraud]
    ato = [e for e in _transactions(boosted) if fraud.get(e["event_id"]) == "account_takeover"]
    assert night_share(ato) > 3 * night_share(legit)


def test_weekends_differ_and_smes_rest_on_sunday(boosted: DemoBank) -> None:
    segment = {c["customer_id"]: c["segment"] for c in boosted.customers}
    counts: Counter[tuple[str, bool]] = Counter()
    days: Counter[bool] = Counter()
    start = boosted.config.start
    for d in range(boosted.config.days):
        days[(start + timedelta(days=d)).weekday() == 6] += 1
    for e in _transactions(boosted):
        counts[(segment[e["customer_id"]], _time(e["occurred_at"]).weekday() == 6)] += 1
    sme_sunday = counts[("sme", True)] / days[True]
    sme_weekday = counts[("sme", False)] / days[False]
    assert sme_sunday < 0.5 * sme_weekday


def test_app_victims_skew_elderly(boosted: DemoBank) -> None:
    age = {c["customer_id"]: c["age_band"] for c in boosted.customers}
    victims = _victims(boosted, "app_scam")
    population = sum(a in ELDERLY for a in age.values()) / len(age)
    assert sum(age[v] in ELDERLY for v in victims) / len(victims) > 1.5 * population


def test_rejects_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone"):
        generate(BankConfig(customers=5, days=2, start=datetime(2026, 1, 1)))


def test_tiny_bank_still_builds_and_reports_progress() -> None:
    calls: list[tuple[int, int]] = []
    bank = generate(
        BankConfig(customers=5, days=2, start=datetime(2026, 1, 1, tzinfo=UTC)),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert bank.events
    assert calls[-1][0] == calls[-1][1]
