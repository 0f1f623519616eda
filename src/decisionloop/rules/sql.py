"""The backtest compiler: checked rule trees as DuckDB (and Spark) SQL, one boolean column each.

The same whitelisted sqlglot tree that the online compiler turns into Python is rewritten here
into SQL whose result is, row for row, the Python one (TRUE, FALSE or NULL), and printed by
sqlglot's generator for the target dialect. Names become quoted columns
(``"customer.txn_count_1h"``) of a table holding one row per event: its fields and its feature
values.

Where the engines differ from our semantics, the tree is rewritten:

=======================  =====================================  ==================================
trap                     DuckDB / Spark as they are             what we generate
=======================  =====================================  ==================================
``x / 0``, ``x % 0``     DuckDB: ``inf`` / error; Spark ANSI:   ``x / NULLIF(y, 0)``: NULL
                         error
``7 / 2``                3.5 in both (never integer division)   unchanged (Python ``/`` is 3.5 too)
``-7 % 2``               -1 (truncated) in both                 unchanged; Python follows SQL
``0.1``                  DECIMAL literal (exact arithmetic)     ``CAST(0.1 AS DOUBLE)``, as Python
``int_lit * int_lit``    DuckDB INTEGER literals overflow       integer operands of arithmetic
                         at 2^31                                are ``CAST(... AS BIGINT)``
``hour(t)``              DuckDB: in the session's TimeZone      DuckDB: ``hour(t AT TIME ZONE
                                                                'UTC')``; Spark needs
                                                                ``spark.sql.session.timeZone=UTC``
``dayofweek(t)``         Spark: Sunday = 1 ... Saturday = 7     Spark: ``DAYOFWEEK(t) - 1``
``LIKE 'a\\%'``          Spark: ``\\`` escapes by default       Spark: backslashes doubled;
                                                                DuckDB has no default escape
``hour(NULL)``           DuckDB cannot pick an overload         ``CAST(NULL AS TIMESTAMPTZ)``
=======================  =====================================  ==================================

Already equal and covered by the parity tests: ``least``/``greatest`` skip NULLs; ``IN`` with a
NULL in the list; ``CASE`` without ``ELSE``; string comparison by code point (binary collation,
UTF-8 byte order is code-point order); ``upper``/``lower`` one character to one (Python follows
DuckDB; Spark uses Java's full case mapping, e.g. ``upper('ß') = 'SS'``).

``has_label``/``in_list`` become ``EXISTS`` over the store's history tables, in force at the
row's ``decided_at`` (:mod:`decisionloop.ops.lookups`; the tables come from
:func:`decisionloop.ops.history.register_history`).

Numeric limits stay: DuckDB BIGINT arithmetic fails on 64-bit overflow where Python's integers
grow, and integers beyond 2^53 compared with doubles may differ in the last bits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
from sqlglot import exp

from decisionloop.errors import ExpressionError
from decisionloop.ops.lookups import LOOKUP_FUNCTIONS, lookup_exists
from decisionloop.rules.expressions import Checked, column_name
from decisionloop.rules.typecheck import SqlType, TypeChecker

Dialect = Literal["duckdb", "spark"]
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg, exp.Abs)

DUCKDB_TYPES: dict[SqlType, str] = {
    "number": "DOUBLE",
    "integer": "BIGINT",
    "string": "VARCHAR",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "null": "VARCHAR",
    "any": "VARCHAR",
}
ARROW_TYPES: dict[SqlType, pa.DataType] = {
    "number": pa.float64(),
    "integer": pa.int64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "null": pa.string(),
    "any": pa.string(),
}


def sql_tree(checked: Checked, dialect: Dialect = "duckdb") -> exp.Expression:
    """The checked tree rewritten for ``dialect`` (a copy; the checked tree is untouched)."""
    checker = TypeChecker(checked.types, column_name)

    def rewrite(node: exp.Expression, in_arithmetic: bool) -> exp.Expression:
        if isinstance(node, exp.Column):
            return exp.column(exp.to_identifier(column_name(node), quoted=True))
        if isinstance(node, exp.Literal) and not node.is_string:
            if any(c in node.this for c in ".eE"):
                return exp.cast(node, exp.DataType.build("DOUBLE"))
            return exp.cast(node, exp.DataType.build("BIGINT")) if in_arithmetic else node
        if isinstance(node, exp.Anonymous):
            if node.name.lower() in LOOKUP_FUNCTIONS:  # point-in-time EXISTS over the history
                return lookup_exists(
                    node.name.lower(), [rewrite(a, False) for a in node.expressions]
                )
            raise ExpressionError(f"custom function {node.name!r} has no SQL form")
        untyped_null = isinstance(node, exp.Hour | exp.DayOfWeek) and (
            checker.infer(node.this) == "null"
        )
        arithmetic = isinstance(node, _ARITHMETIC)
        for key, value in list(node.args.items()):
            if isinstance(value, exp.Expression):
                node.set(key, rewrite(value, arithmetic))
            elif isinstance(value, list):
                node.set(key, [rewrite(v, arithmetic) for v in value])
        if isinstance(node, exp.Div | exp.Mod):
            divisor = exp.Nullif(this=node.expression, expression=exp.Literal.number(0))
            node.set("expression", divisor)
        elif isinstance(node, exp.Hour | exp.DayOfWeek):
            moment = node.this
            if untyped_null:
                moment = exp.cast(moment, exp.DataType.build("TIMESTAMPTZ"))
            if dialect == "duckdb":
                moment = exp.AtTimeZone(this=moment, zone=exp.Literal.string("UTC"))
            node.set("this", moment)
            if dialect == "spark" and isinstance(node, exp.DayOfWeek):
                return exp.Paren(this=exp.Sub(this=node, expression=exp.Literal.number(1)))
        elif isinstance(node, exp.Like | exp.ILike) and dialect == "spark":
            pattern = node.expression
            if isinstance(pattern, exp.Literal) and "\\" in pattern.this:
                node.set("expression", exp.Literal.string(pattern.this.replace("\\", "\\\\")))
        return node

    return rewrite(checked.tree.copy(), False)


def predicate_sql(checked: Checked, dialect: Dialect = "duckdb") -> str:
    return sql_tree(checked, dialect).sql(dialect=dialect)


def select_sql(
    rules: Sequence[tuple[str, Checked]],
    table: str,
    dialect: Dialect = "duckdb",
    keep: Iterable[str] = (),
) -> str:
    """``SELECT <kept columns>, <rule predicate> AS "<rule id>", ... FROM <table>``."""
    columns: list[exp.Expression] = [
        exp.column(exp.to_identifier(name, quoted=True)) for name in keep
    ]
    for rule_id, checked in rules:
        tree = sql_tree(checked, dialect)
        if checked.type == "null":
            tree = exp.cast(tree, exp.DataType.build("BOOLEAN"))
        columns.append(exp.Alias(this=tree, alias=exp.to_identifier(rule_id, quoted=True)))
    query = exp.select(*columns).from_(exp.Table(this=exp.to_identifier(table, quoted=True)))
    return query.sql(dialect=dialect)


def arrow_table(rows: Sequence[Mapping[str, Any]], types: Mapping[str, SqlType]) -> pa.Table:
    """Rows as an Arrow table with one typed column per name (timestamps as UTC instants)."""
    columns = {}
    for name, kind in types.items():
        values = [row.get(name) for row in rows]
        if kind == "timestamp":
            values = [_utc_instant(v) for v in values]
        columns[name] = pa.array(values, type=ARROW_TYPES[kind])
    return pa.table(columns)


def _utc_instant(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # naive timestamps are UTC, as online
    return value
