"""Hostile rule texts are refused at parse or check time, each with a located, plain reason."""

from __future__ import annotations

import pytest

from decisionloop.errors import ExpressionError
from decisionloop.rules.expressions import MAX_DEPTH, MAX_EXPRESSION_CHARS, Compiler, Source

COMPILER = Compiler({"amount": "number", "channel": "string"})

CASES = [
    (
        "__import__('os').system('echo hi')",
        "expression uses what rules may not",
        "attribute access is not allowed in a rule expression",
        (1, 1),
    ),
    (
        "amount.__class__",
        "expression refers to unknown names",
        "unknown name 'amount.__class__'",
        (1, 1),
    ),
    (
        "amount > (select 1)",
        "expression uses what rules may not",
        "a subquery is not allowed in a rule expression",
        (1, 10),
    ),
    ("exists (select 1)", "expression uses what rules may not", "Exists is not allowed", (1, 16)),
    (
        "eval('1')",
        "expression refers to unknown names",
        "unknown function 'eval' (custom functions: none)",
        (1, 1),
    ),
    (
        "amount > 1; drop table events",
        "expression uses what rules may not",
        "more than one statement is not allowed in a rule expression",
        (1, 1),
    ),
    ("lambda x: x", "cannot parse expression", "unexpected ':'", (1, 9)),
    ("*", "expression uses what rules may not", "Star is not allowed", (1, 1)),
    (
        "(" * (MAX_DEPTH + 1) + "amount > 1" + ")" * (MAX_DEPTH + 1),
        "expression too deep",
        f"nested deeper than {MAX_DEPTH} levels",
        (1, 1),
    ),
    (
        " or ".join(["amount > 1"] * (MAX_EXPRESSION_CHARS // 10)),
        "expression too long",
        f"longer than {MAX_EXPRESSION_CHARS} characters",
        (1, 1),
    ),
]


@pytest.mark.parametrize(("text", "message", "reason", "at"), CASES, ids=lambda c: str(c)[:24])
def test_hostile_text_is_refused_with_a_located_reason(
    text: str, message: str, reason: str, at: tuple[int, int]
) -> None:
    with pytest.raises(ExpressionError) as raised:
        COMPILER.check(text, Source("rule hostile"))
    assert raised.value.message == message
    (problem,) = raised.value.problems
    assert problem.reason.startswith(reason)
    assert (problem.line, problem.column) == at
    assert problem.where == f"{at[0]}:{at[1]} rule hostile"
    assert problem.highlight is not None
    assert "^" in problem.highlight  # a caret under the offending text
