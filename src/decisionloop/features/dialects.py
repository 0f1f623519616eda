"""Per-engine SQL generation for the offline features: the seam where Spark will plug in.

:class:`DuckDBDialect` is complete. Everything the offline compiler writes that is not portable SQL
goes through a method here, so a Spark generator overrides these and nothing else:

* ``payload_struct`` — DuckDB ``json_transform``; Spark: ``from_json(payload, schema)``.
* ``epoch_us`` / ``instant`` — DuckDB ``epoch_us``/``make_timestamptz``; Spark: ``unix_micros``/
  ``timestamp_micros`` (with ``spark.sql.session.timeZone=UTC``).
* ``window`` — ``RANGE BETWEEN n PRECEDING`` over integer microseconds works on both, but
  ``EXCLUDE CURRENT ROW`` (definitions without ``include_current``) and ``count(DISTINCT ...)
  OVER`` do not exist in Spark: there, subtract the current row for count/sum/avg, and use
  ``size(collect_set(...))`` or the exact self-join path for distinct/min/max.
* ``int_div`` / ``unnest_pair`` — the exact path's bucketed equi-join; Spark: ``div`` and
  ``explode(array(...))``.
* ``to_wide`` — 128-bit integers for the exact sums of squares behind ``stddev``; Spark:
  ``DECIMAL(38, 0)`` (its ``//`` and ``%`` then need ``div`` and ``pmod``).
* ``expression`` / ``sql`` — derived features: checked trees printed by the rules' SQL back end.
* ``filter`` — feature filters are the rule language: the rules package's SQL back end
  (:func:`decisionloop.rules.sql.predicate_sql`) prints them with the online semantics for the
  dialect, over columns named like the fields (timestamps as UTC instants).

:class:`SparkDialect` is that generator (``docs/spark.md``). Besides the list above it quotes
identifiers with backticks, escapes string literals with backslashes, writes plain CTEs, and adds
the 2^53 partition guard's magnitudes as ``DECIMAL(38, 0)`` (Spark's ``sum`` of BIGINT fails on
64-bit overflow where DuckDB's widens to HUGEINT).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp

from decisionloop.rules.expressions import Checked
from decisionloop.rules.sql import Dialect, predicate_sql, sql_tree


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBDialect:
    """SQL for DuckDB (the embedded source layer)."""

    name: Dialect = "duckdb"

    # -- names and query shape ----------------------------------------------------------------
    def quote(self, name: str) -> str:
        return quote(name)

    def string(self, text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    def cte(self, name: str, body: str, materialized: bool) -> str:
        """One common table expression; ``materialized``: computed once for all its readers."""
        return f"{name} AS {'' if materialized else 'NOT '}MATERIALIZED (\n{body}\n)"

    # -- reading the source layer -------------------------------------------------------------
    def payload_struct(self, payload: str, fields: Mapping[str, str]) -> str:
        """Parse the payload once into a struct of the typed fields (JSON numbers are read with
        correct rounding, as the online decoder does)."""
        shape = ", ".join(f'"{name}": "{sql_type}"' for name, sql_type in fields.items())
        return f"json_transform({payload}, '{{{shape}}}')"

    def struct_field(self, struct: str, name: str) -> str:
        return f"{struct}.{self.quote(name)}"

    def epoch_us(self, column: str) -> str:
        return f"epoch_us({column})"

    def instant(self, micros: int) -> str:
        return f"make_timestamptz({int(micros)})"

    def parse_instant(self, text: str) -> str:
        return f"CAST({text} AS TIMESTAMPTZ)"

    # -- aggregates -----------------------------------------------------------------------------
    def window(
        self, aggregate: str, partition: str, order: str, width: int, include_current: bool
    ) -> str:
        """``aggregate`` over the rows of ``partition`` with ``order`` in ``(o - width, o]``."""
        exclude = "" if include_current else " EXCLUDE CURRENT ROW"
        return (
            f"{aggregate} OVER (PARTITION BY {partition} ORDER BY {order} "
            f"RANGE BETWEEN {width - 1} PRECEDING AND CURRENT ROW{exclude})"
        )

    def running(self, aggregate: str, partition: str, order: str) -> str:
        """``aggregate`` over the rows of ``partition`` up to and including the current order
        value (its peers too)."""
        return (
            f"{aggregate} OVER (PARTITION BY {partition} ORDER BY {order} "
            "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        )

    def window_atom(
        self, kind: str, column: str, partition: str, width: int, include_current: bool
    ) -> str:
        """One atom of the window path (``offline._Compiler``): ``kind`` of ``column`` (NULL
        where the stream is not fed) over the frame ``(_t - width, _t]`` of ``partition``."""
        argument = {
            "count": f"count({column})",
            # Integers summed as doubles: exact while every partial sum stays below 2^53, which
            # the partition guard (see compile) ensures; other partitions take the exact path.
            "units": f"sum({self.to_double(column)})",
            "sum": f"sum({self.to_double(column)})",
            # Squares far exceed 2^53: added as 128-bit integers, exact in every partition.
            "squares": f"sum({self.to_wide(column)} * {column})",
            "first": f"min({column})",
            "last": f"max({column})",
            "present": f"count({column})",
            "min": f"min({column})",
            "max": f"max({column})",
            "distinct_count": f"count(DISTINCT {column})",
        }[kind]
        value = self.window(argument, partition, "_t", width, include_current)
        return self.to_bigint(value) if kind in ("units", "sum") else value

    def partition_total(self, value: str, partition: str) -> str:
        """The total of non-negative BIGINTs over a whole partition (any magnitude)."""
        return f"sum({value}) OVER (PARTITION BY {partition})"

    def int_div(self, value: str, divisor: int) -> str:
        """Integer division of non-negative BIGINTs (Spark: ``div``)."""
        return f"({value} // {int(divisor)})"

    def unnest_pair(self, first: str, second: str) -> str:
        """One row per value (Spark: ``explode(array(...))``)."""
        return f"unnest([{first}, {second}])"

    def to_bigint(self, value: str) -> str:
        return f"CAST({value} AS BIGINT)"

    def to_wide(self, value: str) -> str:
        """A 128-bit integer (Spark: ``DECIMAL(38, 0)``), for exact sums of squares."""
        return f"CAST({value} AS HUGEINT)"

    def to_double(self, value: str) -> str:
        return f"CAST({value} AS DOUBLE)"

    def wide_div(self, value: str, divisor: int) -> str:
        """Integer division of a non-negative wide integer (``to_wide``)."""
        return f"{value} // {int(divisor)}"

    def wide_mod(self, value: str, divisor: int) -> str:
        return f"{value} % {int(divisor)}"

    # -- filters and derived features -------------------------------------------------------
    def filter(self, checked: Checked) -> str:
        """A checked filter over columns named like its names (``predicate_sql``)."""
        return predicate_sql(checked, self.name)

    def expression(self, checked: Checked) -> exp.Expression:
        """A checked expression as a SQL tree over columns named like its names."""
        return sql_tree(checked, self.name)

    def sql(self, tree: exp.Expression) -> str:
        return tree.sql(dialect=self.name)


class SparkDialect(DuckDBDialect):
    """Spark SQL (``features/spark.py`` runs it; the session time zone must be UTC)."""

    name: Dialect = "spark"

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def string(self, text: str) -> str:
        # Spark reads backslash escapes in literals, and two adjacent literals as one.
        return exp.Literal.string(text).sql(dialect=self.name)

    def cte(self, name: str, body: str, materialized: bool) -> str:
        return f"{name} AS (\n{body}\n)"

    def payload_struct(self, payload: str, fields: Mapping[str, str]) -> str:
        # Jackson reads JSON numbers into doubles correctly rounded, as DuckDB and orjson do.
        schema = ", ".join(
            f"{self.quote(name)} {'STRING' if sql_type == 'VARCHAR' else sql_type}"
            for name, sql_type in fields.items()
        )
        return f"from_json({payload}, {self.string(schema)})" if schema else "NULL"

    def epoch_us(self, column: str) -> str:
        return f"unix_micros({column})"

    def instant(self, micros: int) -> str:
        return f"timestamp_micros({int(micros)})"

    def parse_instant(self, text: str) -> str:
        return f"CAST({text} AS TIMESTAMP)"

    def window(
        self, aggregate: str, partition: str, order: str, width: int, include_current: bool
    ) -> str:
        if not include_current:
            raise ValueError("Spark has no EXCLUDE CURRENT ROW: window_atom rewrites it")
        return super().window(aggregate, partition, order, width, True)

    def window_atom(
        self, kind: str, column: str, partition: str, width: int, include_current: bool
    ) -> str:
        """As DuckDB's, without ``EXCLUDE CURRENT ROW`` and ``count(DISTINCT) OVER``. The window
        path only serves rows that no row of their frame was ingested after (others are flagged
        for the exact path), so the frame without the current row is what was ingested before
        it: invertible totals subtract the current row; min, max and distinct values read the
        earlier event times of the frame plus the rows of the same time ingested before."""
        frame = f"PARTITION BY {partition} ORDER BY _t RANGE BETWEEN {width - 1} PRECEDING AND"
        whole = f"{frame} CURRENT ROW"
        if kind == "distinct_count" and include_current:
            return self.to_bigint(f"size(collect_set({column}) OVER ({whole}))")
        if include_current:
            return super().window_atom(kind, column, partition, width, True)
        own = f"CASE WHEN {column} IS NOT NULL THEN 1 ELSE 0 END"
        if kind in ("count", "present"):
            return f"(count({column}) OVER ({whole}) - {own})"
        if kind in ("units", "sum", "squares"):
            term = self.to_double(column) if kind != "squares" else self.to_wide(column)
            term = f"{term} * {column}" if kind == "squares" else term
            value = (
                f"CASE WHEN count({column}) OVER ({whole}) > {own} "
                f"THEN sum({term}) OVER ({whole}) - coalesce({term}, 0) END"
            )
            return self.to_bigint(value) if kind != "squares" else value
        frames = [
            f"PARTITION BY {partition}, _t ORDER BY _seq ROWS BETWEEN UNBOUNDED PRECEDING "
            "AND 1 PRECEDING"
        ]
        if width > 1:  # earlier event times in the window: none when it is one microsecond
            frames.append(f"{frame} 1 PRECEDING")
        if kind == "distinct_count":
            sets = [f"collect_set({column}) OVER ({f})" for f in frames]
            union = sets[0] if len(sets) == 1 else f"array_union({sets[1]}, {sets[0]})"
            return self.to_bigint(f"size({union})")
        function = "min" if kind in ("min", "first") else "max"
        parts = [f"{function}({column}) OVER ({f})" for f in reversed(frames)]
        # least/greatest skip NULLs, as the aggregates do.
        combined = ("least" if function == "min" else "greatest") + f"({', '.join(parts)})"
        return combined if len(parts) > 1 else parts[0]

    def partition_total(self, value: str, partition: str) -> str:
        return super().partition_total(self.to_wide(value), partition)

    def int_div(self, value: str, divisor: int) -> str:
        return f"({value} div {int(divisor)})"

    def unnest_pair(self, first: str, second: str) -> str:
        return f"explode(array({first}, {second}))"

    def to_wide(self, value: str) -> str:
        return f"CAST({value} AS DECIMAL(38, 0))"

    def wide_div(self, value: str, divisor: int) -> str:
        return f"({value} div {int(divisor)})"


DUCKDB = DuckDBDialect()
SPARK = SparkDialect()
