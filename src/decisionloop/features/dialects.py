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

    # -- reading the source layer -------------------------------------------------------------
    def payload_struct(self, payload: str, fields: Mapping[str, str]) -> str:
        """Parse the payload once into a struct of the typed fields (JSON numbers are read with
        correct rounding, as the online decoder does)."""
        shape = ", ".join(f'"{name}": "{sql_type}"' for name, sql_type in fields.items())
        return f"json_transform({payload}, '{{{shape}}}')"

    def struct_field(self, struct: str, name: str) -> str:
        return f"{struct}.{quote(name)}"

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

    # -- filters and derived features -------------------------------------------------------
    def filter(self, checked: Checked) -> str:
        """A checked filter over columns named like its names (``predicate_sql``)."""
        return predicate_sql(checked, self.name)

    def expression(self, checked: Checked) -> exp.Expression:
        """A checked expression as a SQL tree over columns named like its names."""
        return sql_tree(checked, self.name)

    def sql(self, tree: exp.Expression) -> str:
        return tree.sql(dialect=self.name)


DUCKDB = DuckDBDialect()
