"""The backtest path: shared atoms in DuckDB SQL, each rule's boolean skeleton on bitsets."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from decisionloop.rules import backtest
from decisionloop.rules.expressions import Compiler, Source
from decisionloop.rules.sql import arrow_table
from decisionloop.rules.typecheck import SqlType

TYPES: dict[str, SqlType] = {
    "amount": "number",
    "channel": "string",
    "flag": "boolean",
}
COMPILER = Compiler(TYPES)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    yield connection
    connection.close()


def rules(*texts: str) -> list[tuple[str, Any]]:
    return [(f"r{i}", COMPILER.check(t, Source(f"rule r{i}"))) for i, t in enumerate(texts)]


def test_atoms_are_shared_between_rules() -> None:
    planned = backtest.plan(
        rules(
            "amount > 100 and channel = 'atm'",
            "amount > 100 and not flag",
            "channel = 'atm' or amount > 100",
        )
    )
    assert planned.atoms == ['"amount" > 100', "\"channel\" = 'atm'", '"flag"']
    # NOT needs the FALSE side of its atom; nothing else does.
    assert planned.needs == {(0, True), (1, True), (2, False)}


def test_hits_columns_and_three_valued_results(con: duckdb.DuckDBPyConnection) -> None:
    rng = random.Random(5)
    rows = [
        {
            "amount": rng.choice([None, 5.0, 150.0, 1000.0]),
            "channel": rng.choice([None, "atm", "transfer"]),
            "flag": rng.choice([None, True, False]),
        }
        for _ in range(1_001)  # not a multiple of 8: the last byte is partly outside
    ]
    named = rules(
        "amount > 100 and channel = 'atm'",
        "not (amount > 100 and flag)",
        "channel = 'atm' or not flag",
        "amount is null",
        "NULL",
    )
    con.register("events", arrow_table(rows, TYPES))
    bits = backtest.evaluate(con, "events", named, three_valued=True)

    closures = [COMPILER.closure(checked) for _, checked in named]
    for i, closure in enumerate(closures):
        expected = [closure(row) for row in rows]
        assert bits.values(i) == expected
        assert bits.column(i).tolist() == [v is True for v in expected]
        assert int(bits.hits()[i]) == sum(v is True for v in expected)
    assert bits.fired()[:20] == [
        [i for i, closure in enumerate(closures) if closure(row) is True] for row in rows[:20]
    ]


def test_values_need_the_three_valued_evaluation(con: duckdb.DuckDBPyConnection) -> None:
    con.register("events", arrow_table([{"amount": 1.0}], TYPES))
    bits = backtest.evaluate(con, "events", rules("amount > 0"))
    assert bits.hits().tolist() == [1]
    with pytest.raises(ValueError, match="three_valued"):
        bits.values(0)


def test_atom_queries_run_on_several_cursors_for_a_shared_table(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backtest, "ATOMS_PER_QUERY", 2)
    rows = [{"amount": float(a), "channel": "atm", "flag": a % 2 == 0} for a in range(100)]
    con.register("incoming", arrow_table(rows, TYPES))
    con.execute("CREATE TABLE events AS SELECT * FROM incoming").fetchall()
    named = rules(*(f"amount > {k} and channel = 'atm' and flag" for k in range(0, 100, 10)))
    threaded = backtest.evaluate(con, "events", named, threads=2)
    serial = backtest.evaluate(con, "events", named, threads=1)
    assert (
        threaded.hits().tolist()
        == serial.hits().tolist()
        == [sum(1 for a in range(100) if a > k and a % 2 == 0) for k in range(0, 100, 10)]
    )


def test_atoms_evaluated_on_the_columns_equal_duckdb_including_its_edge_cases(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """Column-vs-literal atoms are evaluated with numpy; each case below must give what the
    same atom gives in DuckDB SQL: NaN (DuckDB orders it above every number), NULLs, an integer
    column against a decimal literal, non-ASCII text ordering, IN lists with and without NULL."""
    con.execute(
        "CREATE TABLE events AS SELECT * FROM (VALUES "
        "(1.5, 2::BIGINT, 'é', true), ('nan'::DOUBLE, 3, 'z', NULL), (NULL, NULL, NULL, false), "
        "(-0.0, -1, 'É', true), (1e300, 9007199254740993, 'ß', NULL)"
        ") t(amount, items, channel, flag)"
    )
    types: dict[str, SqlType] = {
        "amount": "number",
        "items": "integer",
        "channel": "string",
        "flag": "boolean",
    }
    compiler = Compiler(types)
    texts = [
        "amount > 1",
        "amount = 0",
        "items >= 2.5",
        "items = 9007199254740993",
        "items in (2, 3)",
        "channel < 'z'",
        "channel >= 'É'",
        "channel in ('é', 'ß')",
        "channel not in ('é', null)",
        "flag",
        "not flag",
    ]
    named = [(f"r{i}", compiler.check(t, Source(f"rule r{i}"))) for i, t in enumerate(texts)]
    planned = backtest.plan(named, three_valued=True)
    assert len(planned.direct) >= 8  # the fast path is really taken for most of them
    bits = backtest.evaluate(con, "events", planned, three_valued=True)
    for i, text in enumerate(texts):
        sql = backtest.sql_tree(named[i][1], "duckdb").sql(dialect="duckdb")
        expected = [row[0] for row in con.execute(f"SELECT {sql} FROM events").fetchall()]
        assert bits.values(i) == expected, text
