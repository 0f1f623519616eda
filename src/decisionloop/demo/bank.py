"""A synthetic bank for demos: customers, accounts, devices, months of activity, injected fraud.

``generate(BankConfig())`` builds about 2,000 customers over 90 days in a few seconds; everything is
drawn from ``np.random.default_rng(seed)`` so the same config always gives byte-identical
``events.jsonl``. Events use the wire format of the example project (see
``project/example/events/core.yaml``); ground truth for every fraudulent transaction is kept apart
in ``DemoBank.truth`` together with the time its label reaches the bank.

This module is the public face; the work happens in :mod:`~decisionloop.demo.population` (who
banks here), :mod:`~decisionloop.demo.activity` (what they do), :mod:`~decisionloop.demo.typologies`
(the fraud) and :mod:`~decisionloop.demo.wire` (events, tables and files).
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from decisionloop.demo.activity import simulate
from decisionloop.demo.population import Population
from decisionloop.demo.typologies import (
    EventLog,
    FraudRates,
    Ledger,
    balances_before,
    inject_fraud,
)
from decisionloop.demo.wire import Event, Rows, assemble, entity_tables, write_files

__all__ = ["BankConfig", "DemoBank", "FraudRates", "Population", "generate", "write"]


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
    customers: Rows
    accounts: Rows  # balance = closing balance at the end of the period
    devices: Rows
    ips: Rows
    merchants: Rows
    terminals: Rows
    payees: Rows
    events: list[Event]  # sorted by occurred_at, then event_id
    truth: Rows  # one row per fraudulent transaction


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

    # One stream per stage: changing a stage never shifts the draws of the others.
    rng_pop, rng_tx, rng_sessions, rng_fraud = np.random.default_rng(config.seed).spawn(4)
    pop = Population(config, rng_pop)
    tick(1)
    ledger, log = Ledger(), EventLog()
    simulate(pop, ledger, log, rng_tx, rng_sessions)
    tick(2)
    inject_fraud(pop, ledger, log, config.fraud_rates, rng_fraud)
    tick(3)
    ledger.keep(pop.in_period(ledger.frame()["t"]))
    frame = ledger.frame()
    before, closing = balances_before(frame, pop.opening)
    gc_was_on = gc.isenabled()
    gc.disable()  # many fresh dicts: cyclic GC passes would slow the build and find nothing
    try:
        events, truth = assemble(pop, frame, before, log)
        tick(4)
        bank = DemoBank(config, *entity_tables(pop, closing), events, truth)
    finally:
        if gc_was_on:
            gc.enable()
    tick(5)
    return bank


def write(bank: DemoBank, directory: Path) -> dict[str, Path]:
    """Write events.jsonl (one event per line, in order), truth.csv, entity CSVs, manifest.json."""
    tables = {
        "truth": bank.truth,
        "customers": bank.customers,
        "accounts": bank.accounts,
        "devices": bank.devices,
        "ips": bank.ips,
        "merchants": bank.merchants,
        "terminals": bank.terminals,
        "payees": bank.payees,
    }
    return write_files(directory, bank.events, tables, _manifest(bank))


def _manifest(bank: DemoBank) -> dict[str, Any]:
    counts = Counter(event["type"] for event in bank.events)
    by_typology = Counter(row["typology"] for row in bank.truth)
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
