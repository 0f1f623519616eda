"""The expression type checker: every type error names both types and points at the text."""

from __future__ import annotations

from pathlib import Path

import pytest

from decisionloop.engine.engine import compile_project
from decisionloop.errors import DefinitionError, ExpressionError
from decisionloop.project.scaffold import init_project
from decisionloop.rules.expressions import Compiler, Source

SCOPE = {
    "amount": "number",
    "age": "integer",
    "channel": "enum",  # declared field types are accepted: an enum is a string
    "merchant": "string",
    "flag": "boolean",
    "occurred_at": "timestamp",
    "customer.txn_count_1h": "number",
}
COMPILER = Compiler(SCOPE)

# (text, [(reason, caret line)]) — the exact shape every type error has.
GOLDEN: list[tuple[str, list[tuple[str, str]]]] = [
    ("channel = 5", [("cannot compare string with integer (=)", "^^^^^^^^^^^")]),
    (
        "customer.txn_count_1h > 'many'",
        [("cannot compare number with string (>)", "^" * len("customer.txn_count_1h > 'many'"))],
    ),
    ("occurred_at > 5", [("cannot compare timestamp with integer (>)", "^" * 15)]),
    ("flag > 1", [("cannot compare boolean with integer (>)", "^" * 8)]),
    (
        "amount + merchant > 1",
        [("cannot apply '+' to number and string", "^" * len("amount + merchant"))],
    ),
    ("-merchant < 0", [("'-' needs a number, got string", "^" * len("-merchant"))]),
    ("abs(merchant) > 1", [("abs() needs a number, got string", "^" * len("abs(merchant)"))]),
    ("not amount", [("NOT needs a boolean, got number", "    ^^^^^^")]),
    ("amount and flag", [("AND needs a boolean, got number", "^^^^^^")]),
    ("amount", [("a condition must be boolean, got number", "^^^^^^")]),
    ("amount * 2", [("a condition must be boolean, got number", "^" * len("amount * 2"))]),
    ("hour(amount) < 3", [("hour() needs a timestamp, got number", "^" * len("hour(amount)"))]),
    ("dayofweek(merchant) = 0", [("dayofweek() needs a timestamp, got string", "^" * 19)]),
    ("lower(age) = 'a'", [("lower() needs a string, got integer", "^" * len("lower(age)"))]),
    ("amount like 'a%'", [("LIKE needs a string, got number", "^" * len("amount like 'a%'"))]),
    ("merchant ilike channel", [("ILIKE needs a string literal pattern", " " * 15 + "^" * 7)]),
    (
        "channel in ('atm', 2)",
        [("cannot compare string with integer (IN)", " " * 19 + "^")],
    ),
    (
        "amount between 'a' and 'b'",
        [("cannot compare number with string (BETWEEN)", "^" * len("amount between 'a' and 'b'"))],
    ),
    (
        "coalesce(amount, merchant) = 1",
        [
            (
                "coalesce() mixes incompatible types number and string",
                " " * len("coalesce(amount, ") + "^" * len("merchant"),
            )
        ],
    ),
    (
        "case when amount then 1 end = 1",
        [("CASE WHEN needs a boolean, got number", " " * 10 + "^" * 6)],
    ),
    (
        "case when flag then 'a' else 2 end = 'a'",
        [
            (
                "CASE mixes incompatible types string and integer",
                " " * len("case when flag then 'a' else ") + "^",
            )
        ],
    ),
    ("flag is true and amount is false", [("IS TRUE/FALSE needs a boolean, got number", None)]),
]


@pytest.mark.parametrize(("text", "expected"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_type_errors_name_both_types_and_point_at_the_text(
    text: str, expected: list[tuple[str, str | None]]
) -> None:
    with pytest.raises(ExpressionError) as caught:
        COMPILER.check(text, Source("rule r"))
    assert caught.value.message == "type error"
    found = [(p.reason, (p.highlight or "").split("\n")) for p in caught.value.problems]
    assert [reason for reason, _ in found] == [reason for reason, _ in expected]
    for (_, highlight), (_, caret) in zip(found, expected, strict=True):
        assert highlight[0] == text
        if caret is not None:
            assert highlight[1] == caret


@pytest.mark.parametrize(
    "text",
    [
        "amount > 1 and age < 3 and amount = age",  # integers are numbers
        "channel in ('atm', 'transfer') and merchant like 'a%'",
        "coalesce(age, 0.5) > 1 and least(amount, age, NULL) < 3",
        "flag and not flag or flag = true or flag is null",
        "hour(occurred_at) < 5 and dayofweek(occurred_at) in (0, 6)",
        "case when flag then amount else age end > 3",
        "case age when 1 then 'one' else merchant end = 'one'",
        "if(flag, 1, 2.5) = 2.5",
        "amount = NULL or NULL",  # NULL fits anywhere
        "customer.txn_count_1h / 2 > amount % 3",
    ],
)
def test_well_typed_expressions_pass(text: str) -> None:
    checked = COMPILER.check(text, Source("rule r"))
    assert checked.type == "boolean"


def test_every_problem_is_reported_at_once_without_cascades() -> None:
    with pytest.raises(ExpressionError) as caught:
        COMPILER.check("ammount > 'x' and channel = 1 and hour(amount) < 3", Source("rule r"))
    assert [p.reason for p in caught.value.problems] == [
        "unknown name 'ammount'; did you mean amount?",
        # 'ammount' is unknown, so its comparison is not a second complaint
        "cannot compare string with integer (=)",
        "hour() needs a timestamp, got number",
    ]


def test_an_untyped_scope_still_compiles() -> None:
    compiler = Compiler({"amount", "channel"})
    predicate, reads = compiler.compile("amount > 5 and channel = 'atm'", Source("rule r"))
    assert reads == ["amount", "channel"]
    assert predicate({"amount": 6, "channel": "atm"}) is True


def test_a_type_error_in_a_project_is_located_in_its_file(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    init_project(root)
    (root / "rules" / "extra.yaml").write_text(
        "name: extra\nrules:\n  - id: typed\n    when: amount > 5 and channel = 5\n"
    )
    strategy = root / "strategies" / "transaction.yaml"
    strategy.write_text(strategy.read_text().replace("[fraud]", "[fraud, extra]"))

    with pytest.raises(DefinitionError) as caught:
        compile_project(root)

    (problem,) = caught.value.problems
    assert problem.reason == "cannot compare string with integer (=)"
    assert (problem.file, problem.line, problem.column) == ("rules/extra.yaml", 4, 26)
    assert problem.where == "rules/extra.yaml:4:26 rule typed"
    assert problem.highlight == "amount > 5 and channel = 5\n" + " " * 15 + "^" * 11
