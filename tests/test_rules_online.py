"""The online compiler: one generated function, names read once, shared work done once."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from decisionloop.engine.engine import compile_project
from decisionloop.project.scaffold import init_project
from decisionloop.rules.expressions import Checked, Compiler, Source
from decisionloop.rules.online import compile_online

SCOPE = {
    "amount": "number",
    "balance": "number",
    "age": "integer",
    "channel": "string",
    "flag": "boolean",
    "occurred_at": "timestamp",
}


class CountingRow(dict[str, Any]):
    """A row that counts how often each name is read."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.reads: dict[str, int] = {}

    def get(self, key: str, default: Any = None) -> Any:
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().get(key, default)


def checked(texts: list[str], compiler: Compiler | None = None) -> list[Checked]:
    compiler = compiler or Compiler(SCOPE)
    return [compiler.check(text, Source(f"rule {i}")) for i, text in enumerate(texts)]


def test_returns_the_true_rules_in_declaration_order() -> None:
    rules = compile_online(
        checked(["amount > 10", "channel = 'atm'", "amount > 10 and flag", "age IS NULL"])
    )
    assert rules({"amount": 20, "channel": "atm", "flag": True}) == [0, 1, 2, 3]
    assert rules({"amount": 5, "channel": "transfer", "age": 3}) == []
    assert rules({}) == [3]


def test_each_name_is_read_once_per_event() -> None:
    texts = [f"amount > {i} and channel = 'atm' and amount < {i + 50}" for i in range(30)]
    rules = compile_online(checked(texts))
    row = CountingRow({"amount": 20, "channel": "atm"})
    assert rules(row) == list(range(20))
    assert row.reads == {"amount": 1, "channel": 1}


def test_a_shared_guard_is_tested_once_and_range_guards_nest() -> None:
    texts = [f"channel = 'transfer' and amount > {100 * i}" for i in range(1, 41)]
    rules = compile_online(checked(texts))
    assert rules.source.count("== 'transfer'") == 1
    # One comparison per bound, nested: the first failing bound skips the rest.
    assert rules.source.count("> 100.0:") == 1
    assert rules({"channel": "transfer", "amount": 350}) == [0, 1, 2]
    assert rules({"channel": "atm", "amount": 350}) == []
    assert rules.stats["eq_groups"] >= 1
    assert rules.stats["range_groups"] >= 1


def test_many_values_dispatch_through_a_table() -> None:
    texts = [f"channel = 'c{i}' and amount > {i}" for i in range(50)]
    rules = compile_online(checked(texts))
    assert ".get(n" in rules.source  # a dict lookup, not 50 comparisons
    assert rules({"channel": "c7", "amount": 8}) == [7]
    assert rules({"channel": "c7", "amount": 7}) == []
    assert rules({"channel": "zzz", "amount": 100}) == []


def test_shared_sub_expressions_are_computed_once_and_only_when_needed() -> None:
    calls: list[Any] = []

    def risk(value: Any) -> Any:
        calls.append(value)
        return value

    compiler = Compiler(SCOPE, functions={"risk": risk})
    texts = [
        "channel = 'atm' and risk(amount) > 1",
        "channel = 'atm' and risk(amount) > 2 and flag",
        "channel = 'atm' and risk(amount) < 100",
        "channel = 'atm' and 0.7 * balance < amount",
        "channel = 'atm' and 0.7 * balance > 3",
    ]
    rules = compile_online(checked(texts, compiler), functions=compiler.functions)
    assert rules.stats["shared_subexpressions"] == 2  # risk(amount) and 0.7 * balance
    assert rules({"channel": "atm", "amount": 50, "balance": 10, "flag": False}) == [0, 2, 3, 4]
    assert calls == [50]
    calls.clear()
    assert rules({"channel": "transfer", "amount": 50, "balance": 10}) == []
    assert calls == []  # the guard failed: nothing behind it ran


def test_untyped_names_are_evaluated_without_indexing() -> None:
    compiler = Compiler({"amount", "channel"})
    rules = compile_online(checked(["amount > 10 and channel = 'atm'", "amount < 3"], compiler))
    assert rules({"amount": 20, "channel": "atm"}) == [0]
    assert rules({"amount": 1}) == [1]


def test_thousands_of_deeply_nested_rules_compile() -> None:
    rng = random.Random(7)
    columns = [f"f{i}" for i in range(12)]
    compiler = Compiler(dict.fromkeys(columns, "number"))
    texts = [" and ".join(f"{c} > {rng.randint(0, 500)}" for c in columns) for _ in range(2_000)]
    rules = compile_online(checked(texts, compiler))
    closures = [compiler.closure(c) for c in checked(texts[:200], compiler)]
    for _ in range(50):
        row = {c: rng.randint(0, 500) if rng.random() > 0.1 else None for c in columns}
        fired = rules(row)
        assert [i for i in fired if i < 200] == [i for i, f in enumerate(closures) if f(row)]


def test_the_engine_decides_with_one_generated_function(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    init_project(root)
    _, engine = compile_project(root)
    strategy = engine.strategies["transaction"]
    assert strategy.online is not None
    assert strategy.online.rules == len(strategy.rules)
    rng = random.Random(3)
    names = sorted({name for rule in strategy.rules for name in rule.reads})
    start = datetime(2026, 6, 1, tzinfo=UTC)
    for _ in range(500):
        row: dict[str, Any] = {}
        for name in names:
            if rng.random() < 0.1:
                continue
            if name == "occurred_at":
                row[name] = start + timedelta(minutes=rng.randint(0, 60 * 24 * 7))
            elif name in ("channel", "direction"):
                row[name] = rng.choice(
                    ["debit", "credit", "card_online", "transfer", "instant_payment", "atm"]
                )
            else:
                row[name] = rng.choice([0, 1, 2, 3, 4, 5, 8, 10, 500, 1500, 2500, 6000])
        expected = [r for r in strategy.rules if r.predicate(row) is True]
        assert strategy.evaluate(row) == expected


def test_a_number_beyond_any_float_is_still_decided(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    init_project(root)
    _, engine = compile_project(root)
    strategy = engine.strategies["transaction"]
    row = {
        "direction": "debit",
        "channel": "transfer",
        "amount": 10**400,
        "occurred_at": datetime(2026, 6, 1, 2, tzinfo=UTC),
    }
    assert strategy.online is not None
    with pytest.raises(OverflowError):
        strategy.online(row)
    expected = [r for r in strategy.rules if r.predicate(row) is True]
    assert expected
    assert strategy.evaluate(row) == expected
