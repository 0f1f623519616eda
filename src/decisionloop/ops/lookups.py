"""``has_label`` and ``in_list`` in the rule language: their scope, and their SQL form.

A rule writes ``has_label(device, 'mule_suspect')`` (an entity its event carries, a label name)
and ``in_list('blocked_ips', ip)`` (a list name, a string expression). The compiler checks them
and rewrites them into canonical calls that name everything they read::

    has_label('device', device_id, 'mule_suspect', decided_at)
    in_list('blocked_ips', ip, decided_at)

so that every back end sees plain inputs: the closures and the generated online function call
:class:`~decisionloop.ops.index.LookupIndex` methods with those arguments; the SQL compiler turns
them into ``EXISTS`` over the history tables (:func:`lookup_exists`), point-in-time by
``decided_at``. Both are never NULL: a NULL key, value or time matches nothing.

``decided_at`` is the time the decision is taken: online, the engine's clock at the decision; in a
backtest table, the time the stored decision was taken (events imported without a decision: their
``occurred_at``). A label added after that moment is not seen, in either path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

HAS_LABEL = "has_label"
IN_LIST = "in_list"
LOOKUP_FUNCTIONS = frozenset({HAS_LABEL, IN_LIST})
AS_OF = "decided_at"  # the row name holding the decision time

# The history tables as the SQL path reads them; column names are prefixed so that they can
# never capture an event column of the same name inside the correlated subquery.
LABEL_HISTORY = "dl_label_history"
LIST_HISTORY = "dl_list_history"
LABEL_COLUMNS = (
    "dl_entity_type",
    "dl_entity_id",
    "dl_label",
    "dl_created_at",
    "dl_removed_at",
    "dl_expires_at",
)
ITEM_COLUMNS = ("dl_list", "dl_value", "dl_created_at", "dl_removed_at")


@dataclass(frozen=True)
class LookupScope:
    """What lookups may name in one event type: its entities, each with its key field, and the
    index the compiled code reads (None: check only, e.g. ``validate``)."""

    entities: Mapping[str, str]  # entity name -> key field
    index: Any = None  # a LookupIndex; Any keeps rules free of an import cycle

    def functions(self) -> dict[str, Any]:
        if self.index is None:
            return {HAS_LABEL: _unbound, IN_LIST: _unbound}
        return {HAS_LABEL: self.index.has_label, IN_LIST: self.index.in_list}


def _unbound(*_args: Any) -> bool:
    """Lookups compiled without an index (validation only) find nothing."""
    return False


def _column(name: str, table: str) -> exp.Column:
    return exp.column(
        exp.to_identifier(name, quoted=True), table=exp.to_identifier(table, quoted=True)
    )


def _in_force(alias: str, at: exp.Expression, expires: bool) -> list[exp.Expression]:
    """``created <= t AND (removed IS NULL OR removed > t) [AND (expires ... > t)]``."""
    ends = ["dl_removed_at", "dl_expires_at"] if expires else ["dl_removed_at"]
    parts: list[exp.Expression] = [
        exp.LTE(this=_column("dl_created_at", alias), expression=at.copy())
    ]
    for end in ends:
        column = _column(end, alias)
        parts.append(
            exp.Paren(
                this=exp.Or(
                    this=exp.Is(this=column, expression=exp.Null()),
                    expression=exp.GT(this=column.copy(), expression=at.copy()),
                )
            )
        )
    return parts


def lookup_exists(name: str, args: list[exp.Expression]) -> exp.Expression:
    """The SQL form of a canonical lookup call (arguments already rewritten for SQL)."""
    if name == HAS_LABEL:
        entity, key, label, at = args
        alias, table = "dl_l", LABEL_HISTORY
        conditions = [
            exp.EQ(this=_column("dl_entity_type", alias), expression=entity),
            exp.EQ(this=_column("dl_entity_id", alias), expression=key),
            exp.EQ(this=_column("dl_label", alias), expression=label),
            *_in_force(alias, at, expires=True),
        ]
    else:
        list_name, value, at = args
        alias, table = "dl_i", LIST_HISTORY
        conditions = [
            exp.EQ(this=_column("dl_list", alias), expression=list_name),
            exp.EQ(this=_column("dl_value", alias), expression=value),
            *_in_force(alias, at, expires=False),
        ]
    source = exp.Table(
        this=exp.to_identifier(table, quoted=True),
        alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)),
    )
    query = exp.select(exp.Literal.number(1)).from_(source).where(exp.and_(*conditions))
    return exp.Exists(this=query)
