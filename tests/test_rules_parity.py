"""Property tests: one rule, three back ends, one answer.

Random well-typed predicates over ~10 typed names (with NULLs everywhere) are evaluated on random
rows by (a) the reference closures, (b) the generated online function and (c) DuckDB running the
generated SQL over the same rows in a table, both as one SELECT and as the backtest path (shared
atoms in SQL, the boolean skeleton on bitsets); all must give the same TRUE / FALSE / NULL.
The online function only says which rules are TRUE, so each predicate ``p`` is compiled together
with ``NOT (p)``: TRUE when ``p`` fires, FALSE when ``NOT (p)`` does, NULL when neither.

The DuckDB session runs in a non-UTC time zone on purpose: ``hour()`` and ``dayofweek()`` must
still read UTC. Runs are derandomized so that CI sees the same examples every time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import duckdb
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from decisionloop.rules import backtest
from decisionloop.rules.expressions import Checked, Compiler, Source, parse
from decisionloop.rules.online import compile_online
from decisionloop.rules.sql import arrow_table, predicate_sql, select_sql
from decisionloop.rules.typecheck import SqlType

TYPES: dict[str, SqlType] = {
    "amount": "number",
    "balance": "number",
    "customer.txn_count_1h": "number",
    "age": "integer",
    "items": "integer",
    "channel": "string",
    "merchant": "string",
    "is_new": "boolean",
    "verified": "boolean",
    "occurred_at": "timestamp",
    "opened_at": "timestamp",
}
COMPILER = Compiler(TYPES)
PROFILE = settings(
    max_examples=250,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def names(kind: str) -> list[str]:
    return [n for n, t in TYPES.items() if t == kind]


# -- values ---------------------------------------------------------------------------------------
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


NUMBERS = st.one_of(
    st.sampled_from([0, 1, -1, 2, 5, 0.5, -2.5, 0.1, 1000, 3.0]),
    st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
    st.integers(-50, 50),
)
TEXT = st.text(alphabet="abAB%_\\ éÉßİ'", max_size=5)
VALUES: dict[SqlType, st.SearchStrategy[Any]] = {
    "number": NUMBERS,
    "integer": st.integers(-50, 50),
    "string": st.one_of(st.sampled_from(["transfer", "ATM", "atm", "", "a%b"]), TEXT),
    "boolean": st.booleans(),
    "timestamp": st.datetimes(
        min_value=datetime(2020, 1, 1),
        max_value=datetime(2030, 1, 1),
        timezones=st.sampled_from(ZONES),
    ),
}
ROWS = st.lists(
    st.fixed_dictionaries({name: maybe(VALUES[kind]) for name, kind in TYPES.items()}),
    min_size=1,
    max_size=8,
)


# -- well-typed expressions, as SQL text ----------------------------------------------------------
def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


NUMBER_LITERALS = st.one_of(
    st.integers(-20, 20).map(str),
    st.sampled_from(["0.5", "2.5", "0.1", "1.25", "3.0", "100.75", "0"]),
)
STRING_LITERALS = st.one_of(
    st.sampled_from(["transfer", "ATM", "atm", "", "é", "ß", "it's"]), TEXT
).map(sql_string)
PATTERNS = st.text(alphabet="abAB%_\\éßİ", max_size=4).map(sql_string)
COMPARE = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])


Draw = Callable[[st.SearchStrategy[Any]], Any]


def pick(draw: Draw, weighted: list[tuple[int, Callable[[], str]]]) -> str:
    """One of the builders, chosen by weight (one_of's choice leans to its first and last)."""
    total = sum(weight for weight, _ in weighted)
    ticket = draw(st.integers(0, total - 1))
    for weight, build in weighted:
        if ticket < weight:
            return build()
        ticket -= weight
    raise AssertionError("unreachable")


def expression(draw: Draw, kind: str, depth: int) -> str:
    """A random expression of ``kind`` (boolean, number, string, timestamp)."""

    def leaf() -> str:
        if draw(st.integers(0, 11)) == 5:
            return "NULL"  # about one leaf in twelve
        if kind == "number":
            if draw(st.booleans()):
                return str(draw(st.sampled_from(names("number") + names("integer"))))
            return str(draw(NUMBER_LITERALS))
        if kind == "string":
            if draw(st.booleans()):
                return str(draw(st.sampled_from(names("string"))))
            return str(draw(STRING_LITERALS))
        if kind == "timestamp":
            return str(draw(st.sampled_from(names("timestamp"))))
        return str(draw(st.sampled_from([*names("boolean"), "TRUE", "FALSE"])))

    if depth == 0:
        return leaf()

    def sub(of: str = kind) -> str:
        return expression(draw, of, depth - 1)

    def case() -> str:
        condition, then = sub("boolean"), sub()
        otherwise = f" ELSE {sub()}" if draw(st.booleans()) else ""
        return f"CASE WHEN {condition} THEN {then}{otherwise} END"

    def parts(name: str) -> str:
        return f"{name}({', '.join(sub() for _ in range(draw(st.integers(2, 3))))})"

    weighted: list[tuple[int, Callable[[], str]]] = [
        (4, leaf),
        (1, lambda: f"coalesce({sub()}, {sub()})"),
        (1, case),
    ]
    if kind == "number":
        weighted += [
            (8, lambda: f"(({sub()}) {draw(st.sampled_from('+-*/%'))} ({sub()}))"),
            (1, lambda: f"-({sub()})"),
            (1, lambda: f"abs({sub()})"),
            (1, lambda: parts("least")),
            (1, lambda: parts("greatest")),
            (1, lambda: f"if({sub('boolean')}, {sub()}, {sub()})"),
            (
                1,
                lambda: (
                    f"CASE {sub()} WHEN {draw(st.integers(-3, 3))} THEN {sub()} ELSE {sub()} END"
                ),
            ),
            (1, lambda: f"hour({sub('timestamp')})"),
            (1, lambda: f"dayofweek({sub('timestamp')})"),
        ]
    elif kind == "string":
        weighted += [(1, lambda: f"lower({sub()})"), (1, lambda: f"upper({sub()})")]
    elif kind == "boolean":

        def compare(of: str) -> Callable[[], str]:
            return lambda: f"(({sub(of)}) {draw(COMPARE)} ({sub(of)}))"

        def is_null() -> str:
            of = draw(st.sampled_from(["number", "string", "timestamp", "boolean"]))
            return f"({sub(of)}) {draw(st.sampled_from(['IS NULL', 'IS NOT NULL']))}"

        def in_list(of: str) -> Callable[[], str]:
            def build() -> str:
                options = [sub(of) for _ in range(draw(st.integers(1, 4)))]
                return f"({sub(of)}) IN ({', '.join(options)})"

            return build

        def like() -> str:
            word = draw(st.sampled_from(["LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"]))
            return f"({sub('string')}) {word} {draw(PATTERNS)}"

        weighted += [
            (12, compare("number")),
            (3, compare("string")),
            (2, compare("timestamp")),
            (1, lambda: f"(({sub()}) {draw(st.sampled_from(['=', '<>']))} ({sub()}))"),
            (4, lambda: f"(({sub()}) {draw(st.sampled_from(['AND', 'OR']))} ({sub()}))"),
            (2, lambda: f"NOT ({sub()})"),
            (2, is_null),
            (
                1,
                lambda: (
                    f"({sub()}) {draw(st.sampled_from(['IS TRUE', 'IS FALSE', 'IS NOT TRUE']))}"
                ),
            ),
            (2, in_list("number")),
            (2, in_list("string")),
            (2, lambda: f"({sub('number')}) BETWEEN ({sub('number')}) AND ({sub('number')})"),
            (3, like),
        ]
    return pick(draw, weighted)


PREDICATES = st.composite(lambda draw: expression(draw, "boolean", 3))()


# -- the three back ends ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def duck() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'America/New_York'").fetchall()  # hour() must ignore it
    yield con
    con.close()


def check(text: str) -> Checked:
    return COMPILER.check(text, Source("rule under test"))


def three_valued_online(predicates: list[Checked], rows: list[dict[str, Any]]) -> list[list[Any]]:
    negated = [check(f"NOT ({p.text})") for p in predicates]
    online = compile_online([*predicates, *negated])
    n = len(predicates)
    results = []
    for row in rows:
        fired = set(online(row))
        values = []
        for i in range(n):
            is_true, is_false = i in fired, i + n in fired
            assert not (is_true and is_false)
            values.append(True if is_true else False if is_false else None)
        results.append(values)
    return results


def duckdb_values(
    con: duckdb.DuckDBPyConnection, predicates: list[Checked], rows: list[dict[str, Any]]
) -> tuple[list[list[Any]], list[list[Any]]]:
    """The one-SELECT result and the atoms-and-bitsets result, both per row."""
    con.register("events", arrow_table(rows, TYPES))
    try:
        named = [(f"r{i}", p) for i, p in enumerate(predicates)]
        selected = [list(r) for r in con.execute(select_sql(named, "events")).fetchall()]
        bits = backtest.evaluate(con, "events", named, three_valued=True)
        columns = [bits.values(i) for i in range(len(predicates))]
        return selected, [list(values) for values in zip(*columns, strict=True)]
    finally:
        con.unregister("events")


@PROFILE
@given(texts=st.lists(PREDICATES, min_size=1, max_size=4), rows=ROWS)
def test_closures_online_and_duckdb_agree(
    duck: duckdb.DuckDBPyConnection, texts: list[str], rows: list[dict[str, Any]]
) -> None:
    predicates = [check(text) for text in texts]
    closures = [COMPILER.closure(p) for p in predicates]
    expected = [[closure(row) for closure in closures] for row in rows]
    for row_values in expected:
        assert all(v is None or isinstance(v, bool) for v in row_values)
    assert three_valued_online(predicates, rows) == expected, (texts, rows)
    selected, bitsets = duckdb_values(duck, predicates, rows)
    assert selected == expected, (texts, [predicate_sql(p) for p in predicates], rows)
    assert bitsets == expected, (texts, rows)


@PROFILE
@given(text=PREDICATES, rows=ROWS)
def test_parse_print_parse_is_stable(text: str, rows: list[dict[str, Any]]) -> None:
    tree = parse(text, Source("rule under test"))
    printed = tree.sql(dialect="duckdb")
    again = parse(printed, Source("printed"))
    # A fixed point after one print; the same tree, except that if(c, a, b) prints as CASE.
    assert again.sql(dialect="duckdb") == printed
    if tree.find(exp.If) is None:
        assert again == tree, (text, printed)
    original, reprinted = check(text), check(printed)
    closures = COMPILER.closure(original), COMPILER.closure(reprinted)
    for row in rows:
        assert closures[0](row) == closures[1](row), (text, printed, row)
    # The generated SQL parses back in both dialects.
    for dialect in ("duckdb", "spark"):
        generated = predicate_sql(original, dialect)
        assert sqlglot.parse_one(generated, read=dialect) is not None


# -- many rules at once: the online compiler's grouping, dispatch and sharing ---------------------
ATOMS = st.sampled_from(
    [
        "channel = 'transfer'",
        "channel = 'atm'",
        "channel = 'ATM'",
        "channel IN ('transfer', 'atm')",
        "channel IN ('ATM', NULL)",
        "merchant = ''",
        "merchant IN ('a', 'b', 'é', 'ß', 'A', 'B')",
        "is_new",
        "NOT verified",
        "verified IS TRUE",
        "amount > 0",
        "amount >= 0.5",
        "amount > 0.5",
        "amount < 1000",
        "amount <= 5",
        "amount BETWEEN -1 AND 1000",
        "1000 > amount",
        "age > 10",
        "age >= 10",
        "age < -3",
        "age = 2",
        "age IN (1, 2, 3, 4, 5, 6, 7)",
        "items > age",
        "customer.txn_count_1h >= 3",
        "amount >= 0.7 * balance",
        "0.7 * balance < 100",
        "hour(occurred_at) < 6",
        "dayofweek(occurred_at) IN (0, 6)",
        "lower(merchant) LIKE 'a%'",
        "merchant ILIKE '%b'",
        "coalesce(balance, 0) > 10",
        "amount / balance > 0.9",
        "(age > 3 OR items < 2)",
        "NOT (channel = 'atm' AND amount > 2)",
        "occurred_at > opened_at",
        "merchant > 'a'",
        "merchant <= 'B'",
    ]
)
RULE_SETS = st.lists(
    st.lists(ATOMS, min_size=1, max_size=4, unique=True).map(" AND ".join),
    min_size=1,
    max_size=40,
)


@PROFILE
@given(texts=RULE_SETS, rows=st.lists(ROWS.map(lambda r: r[0]), min_size=1, max_size=12))
def test_online_compiler_fires_exactly_the_rules_that_are_true(
    texts: list[str], rows: list[dict[str, Any]]
) -> None:
    predicates = [check(text) for text in texts]
    closures = [COMPILER.closure(p) for p in predicates]
    online = compile_online(predicates)
    for row in rows:
        expected = [i for i, closure in enumerate(closures) if closure(row) is True]
        assert online(row) == expected, (texts, row, online.source)
