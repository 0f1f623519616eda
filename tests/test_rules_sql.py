"""The semantic traps between Python and DuckDB (and Spark), one by one, on all three back ends.

Each case is a predicate, a row and the one answer the closures, the generated online function
and DuckDB must all give. The random parity tests cover the language broadly; these pin down the
places where the engines differ by default and the compilers had to make them agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from decisionloop.errors import ExpressionError
from decisionloop.rules.expressions import Compiler, Source
from decisionloop.rules.functions import sql_lower, sql_upper
from decisionloop.rules.online import compile_online
from decisionloop.rules.sql import arrow_table, predicate_sql, select_sql
from decisionloop.rules.typecheck import SqlType

TYPES: dict[str, SqlType] = {
    "amount": "number",
    "age": "integer",
    "merchant": "string",
    "is_new": "boolean",
    "occurred_at": "timestamp",
}
COMPILER = Compiler(TYPES)
PLUS_TWO = timezone(timedelta(hours=2))
MINUS_EIGHT = timezone(timedelta(hours=-8))

CASES: list[tuple[str, dict[str, Any], bool | None]] = [
    # division and modulo by zero are NULL (DuckDB: inf for /, an error for %)
    ("amount / 0 IS NULL", {"amount": 1.0}, True),
    ("age / 0 IS NULL", {"age": 1}, True),
    ("age % 0 IS NULL", {"age": 7}, True),
    ("amount / -0.0 IS NULL", {"amount": 1.0}, True),
    # division is never integer division
    ("7 / 2 = 3.5", {}, True),
    ("age / 2 = 3.5", {"age": 7}, True),
    # modulo truncates toward zero, as SQL does (Python's % floors)
    ("-7 % 2 = -1", {}, True),
    ("age % 2 = -1", {"age": -7}, True),
    ("age % -2 = 1", {"age": 7}, True),
    ("amount % 2 = -1.5", {"amount": -7.5}, True),
    # decimal literals are doubles, as in Python (DuckDB would use exact DECIMAL arithmetic)
    ("0.1 + 0.2 = 0.3", {}, False),
    ("amount * 0.1 = 0.30000000000000004", {"amount": 3}, True),
    # integer literals are 64-bit (DuckDB's INTEGER literals overflow at 2^31)
    ("2147483647 * 2 = 4294967294", {}, True),
    # LIKE: % and _ only; a backslash is an ordinary character
    ("merchant LIKE 'a\\%'", {"merchant": "a\\xyz"}, True),
    ("merchant LIKE 'a\\%'", {"merchant": "a%"}, False),
    ("merchant LIKE 'a_c'", {"merchant": "abc"}, True),
    ("merchant LIKE '%'", {"merchant": ""}, True),
    ("merchant LIKE ''", {"merchant": "a"}, False),
    ("merchant LIKE 'a%'", {"merchant": "a\nb"}, True),
    ("merchant NOT LIKE 'a%'", {"merchant": "abc"}, False),
    ("merchant NOT ILIKE 'A%'", {"merchant": "abc"}, False),
    ("merchant ILIKE 'STRASSE'", {"merchant": "straße"}, False),
    ("merchant ILIKE 'é%'", {"merchant": "ÉTÉ"}, True),
    # upper/lower map one character to one (Python alone would give 'STRASSE')
    ("upper(merchant) = 'STRAẞE'", {"merchant": "straße"}, True),
    ("lower(merchant) = 'i'", {"merchant": "İ"}, True),
    # hour and dayofweek read UTC whatever the zone of the value or of the session
    ("hour(occurred_at) = 1", {"occurred_at": datetime(2026, 1, 1, 3, tzinfo=PLUS_TWO)}, True),
    # Saturday 16:30 in UTC-8 is Sunday 00:30 UTC; Sunday is 0
    (
        "dayofweek(occurred_at) = 0",
        {"occurred_at": datetime(2026, 1, 3, 16, 30, tzinfo=MINUS_EIGHT)},
        True,
    ),
    ("hour(NULL) IS NULL", {}, True),
    # strings compare by code point
    ("'B' < 'a'", {}, True),
    ("'é' > 'z'", {}, True),
    ("merchant < 'ab'", {"merchant": "a"}, True),
    # least/greatest skip NULLs
    ("least(amount, NULL, 3) = 3", {"amount": None}, True),
    ("greatest(amount, 2) = 2", {"amount": None}, True),
    ("greatest(NULL, NULL) IS NULL", {}, True),
    # IN with a NULL in the list: TRUE on a match, NULL otherwise
    ("1 IN (2, NULL)", {}, None),
    ("2 IN (2, NULL)", {}, True),
    ("age NOT IN (2, NULL)", {"age": 1}, None),
    ("age IN (1, 2)", {"age": None}, None),
    # CASE without ELSE is NULL; a NULL condition is not TRUE
    ("CASE WHEN amount > 5 THEN TRUE END", {"amount": 1.0}, None),
    ("CASE WHEN is_new THEN FALSE ELSE TRUE END", {"is_new": None}, True),
    ("CASE age WHEN 1 THEN 'one' ELSE 'other' END = 'one'", {"age": 1}, True),
    ("if(is_new, 1, 2) = 2", {"is_new": None}, True),
    # three-valued logic
    ("amount BETWEEN 6 AND NULL", {"amount": 5.0}, False),
    ("amount BETWEEN 1 AND NULL", {"amount": 5.0}, None),
    ("NULL AND FALSE", {}, False),
    ("NULL OR TRUE", {}, True),
    ("NOT (age > 3)", {"age": None}, None),
    ("is_new IS NOT TRUE", {"is_new": None}, True),
    ("coalesce(age, 0) = 0", {"age": None}, True),
    # integers and numbers compare by value
    ("age = 2.0", {"age": 2}, True),
]


@pytest.fixture(scope="module")
def duck() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'Asia/Tokyo'").fetchall()
    yield con
    con.close()


@pytest.mark.parametrize(("text", "row", "expected"), CASES, ids=[c[0] for c in CASES])
def test_trap_gives_one_answer_on_every_back_end(
    duck: duckdb.DuckDBPyConnection, text: str, row: dict[str, Any], expected: bool | None
) -> None:
    checked = COMPILER.check(text, Source("trap"))
    assert COMPILER.closure(checked)(row) is expected
    online = compile_online([checked, COMPILER.check(f"NOT ({text})", Source("trap"))])
    fired = online(row)
    assert (True if fired == [0] else False if fired == [1] else None) is expected
    duck.register("events", arrow_table([row], TYPES))
    try:
        ((value,),) = duck.execute(select_sql([("r", checked)], "events")).fetchall()
    finally:
        duck.unregister("events")
    assert value is expected, predicate_sql(checked)


def test_case_mappings_match_duckdb_for_every_character(
    duck: duckdb.DuckDBPyConnection,
) -> None:
    chars = [chr(c) for c in range(0x20, 0x110000) if not 0xD800 <= c < 0xE000]
    duck.register("chars", pa.table({"c": chars}))
    try:
        rows = duck.execute("SELECT c, upper(c), lower(c) FROM chars").fetchall()
    finally:
        duck.unregister("chars")
    upper = [c for c, u, _ in rows if sql_upper(c) != u]
    lower = [c for c, _, low in rows if sql_lower(c) != low]
    assert (upper, lower) == ([], [])


def test_sql_names_are_quoted_columns_and_literals_are_typed() -> None:
    checked = COMPILER.check("amount >= 0.7 * age and merchant = 'it''s'", Source("r"))
    assert predicate_sql(checked) == (
        '"amount" >= CAST(0.7 AS DOUBLE) * "age" AND "merchant" = \'it\'\'s\''
    )
    features = Compiler({"customer.txn_count_1h": "number"})
    feature = features.check("customer.txn_count_1h > 3", Source("r"))
    assert predicate_sql(feature) == '"customer.txn_count_1h" > 3'
    assert predicate_sql(feature, "spark") == "`customer.txn_count_1h` > 3"


def test_spark_sql_rewrites_dayofweek_and_like_escapes() -> None:
    checked = COMPILER.check(
        "dayofweek(occurred_at) = 0 and hour(occurred_at) < 5 and merchant like 'a\\%' "
        "and amount / age > 1",
        Source("r"),
    )
    assert predicate_sql(checked, "spark") == (
        "(DAYOFWEEK(`occurred_at`) - 1) = 0 AND HOUR(`occurred_at`) < 5 "
        "AND `merchant` LIKE 'a\\\\\\\\%' AND `amount` / NULLIF(`age`, 0) > 1"
    )
    assert predicate_sql(checked, "duckdb") == (
        "DAYOFWEEK(\"occurred_at\" AT TIME ZONE 'UTC') = 0 "
        "AND HOUR(\"occurred_at\" AT TIME ZONE 'UTC') < 5 "
        'AND "merchant" LIKE \'a\\%\' AND "amount" / NULLIF("age", 0) > 1'
    )


def test_select_gives_one_boolean_column_per_rule(duck: duckdb.DuckDBPyConnection) -> None:
    rules = [
        ("large", COMPILER.check("amount > 100", Source("large"))),
        ("night", COMPILER.check("hour(occurred_at) < 5", Source("night"))),
    ]
    rows = [
        {"amount": 500.0, "occurred_at": datetime(2026, 1, 1, 2, tzinfo=UTC)},
        {"amount": 5.0, "occurred_at": datetime(2026, 1, 1, 12, tzinfo=UTC)},
        {"amount": None, "occurred_at": None},
    ]
    duck.register("events", arrow_table(rows, TYPES))
    try:
        query = select_sql(rules, "events", keep=["amount"])
        assert query.startswith('SELECT "amount", "amount" > 100 AS "large", ')
        assert duck.execute(query).fetchall() == [
            (500.0, True, True),
            (5.0, False, False),
            (None, None, None),
        ]
    finally:
        duck.unregister("events")


def test_custom_functions_have_no_sql_form() -> None:
    compiler = Compiler(TYPES, functions={"risk": lambda x: x})
    checked = compiler.check("risk(amount) > 1", Source("rule custom"))
    with pytest.raises(ExpressionError, match="custom function 'risk' has no SQL form"):
        predicate_sql(checked)
